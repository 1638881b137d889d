//! Channel adapters against loopback fakes of each platform, and the hub end to end.

mod discord;
mod flows_telegram;
mod flows_webhooks;
mod harness;
mod slack;
mod telegram;
mod whatsapp;
