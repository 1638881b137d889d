//! HTTP routes, one file per group.

pub mod admin;
pub mod capabilities;
pub mod channels;
pub mod chat;
pub mod health;
pub mod knowledge;
pub mod openai;
pub mod ui;
pub mod understand;
