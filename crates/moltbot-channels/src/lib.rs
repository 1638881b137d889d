//! Messaging channels: the platforms a person already uses, wired into the same turn
//! pipeline as the HTTP API.
//!
//! # Layout
//! - [`hub`]: [`ChannelHub`], the one place every inbound message goes through: durable inbox
//!   (de-duplicated by platform message id), access policy (pairing, allowlist, group
//!   mentions), session mapping, one turn at a time per session, typing indicator, reply
//!   splitting, and the durable outbox with retries and backoff.
//! - [`registry`]: builds the enabled adapters and their webhook routes from config.
//! - [`pairing`]: one-time codes for unknown senders, their expiry and rate limits.
//! - [`text`]: splitting long replies on paragraph and sentence boundaries.
//! - [`http`]: the shared HTTP client and the mapping of platform answers to errors.
//! - Adapters, one per platform, each implementing [`moltbot_core::Channel`]:
//!   [`telegram`] (long polling or webhook, MarkdownV2), [`whatsapp`] (Cloud API webhook with
//!   signature check), [`discord`] (gateway WebSocket + REST), [`slack`] (Events API with
//!   signing-secret check).
//! - [`signature`]: HMAC-SHA256 webhook signatures checked in constant time.

pub mod discord;
pub mod http;
pub mod hub;
pub mod pairing;
pub mod registry;
pub mod signature;
pub mod slack;
pub mod telegram;
pub mod text;
pub mod whatsapp;

pub use hub::{ChannelHub, ChannelStatus, HubSink};
