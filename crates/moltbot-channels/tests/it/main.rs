//! Channel adapters against loopback fakes of each platform, and the hub end to end.

mod discord;
mod slack;
mod telegram;
mod whatsapp;
