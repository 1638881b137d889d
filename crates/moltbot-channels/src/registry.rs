//! Building the enabled channels from config: the adapters, their webhook routes, and the
//! sink they deliver to.

use crate::discord::DiscordChannel;
use crate::hub::HubSink;
use crate::slack::SlackChannel;
use crate::telegram::TelegramChannel;
use crate::whatsapp::WhatsAppChannel;
use moltbot_core::config::{ChannelsConfig, TelegramMode};
use moltbot_core::{Channel, ChannelError, InboundSink};
use std::sync::Arc;

/// The enabled adapters and the HTTP routes of those that receive webhooks.
pub struct Built {
    pub channels: Vec<Arc<dyn Channel>>,
    pub routes: axum::Router,
}

/// Construct every enabled channel of `cfg`, delivering to `sink`.
pub fn build(cfg: &ChannelsConfig, sink: &Arc<HubSink>) -> Result<Built, ChannelError> {
    let dyn_sink: Arc<dyn InboundSink> = sink.clone();
    let mut channels: Vec<Arc<dyn Channel>> = Vec::new();
    let mut routes = axum::Router::new();
    if cfg.telegram.enabled {
        let t = Arc::new(TelegramChannel::new(&cfg.telegram)?);
        if cfg.telegram.mode == TelegramMode::Webhook {
            routes = routes.merge(t.webhook_router(dyn_sink.clone()));
        }
        channels.push(t);
    }
    if cfg.whatsapp.enabled {
        let w = Arc::new(WhatsAppChannel::new(&cfg.whatsapp)?);
        routes = routes.merge(w.webhook_router(dyn_sink.clone()));
        channels.push(w);
    }
    if cfg.discord.enabled {
        channels.push(Arc::new(DiscordChannel::new(&cfg.discord)?));
    }
    if cfg.slack.enabled {
        let s = Arc::new(SlackChannel::new(&cfg.slack)?);
        routes = routes.merge(s.events_router(dyn_sink.clone()));
        channels.push(s);
    }
    Ok(Built { channels, routes })
}
