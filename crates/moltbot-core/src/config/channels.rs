//! `[channels]`: messaging platforms, who may talk to the assistant through them, and how
//! their conversations map to sessions.

use crate::Secret;
use serde::{Deserialize, Serialize};

use super::{in_range, ConfigError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// `per-peer`: each sender (and each group) has its own session. `main`: the owner (a
    /// sender in a channel's `allow_from`) continues one shared session named `main` from
    /// every channel; other approved senders keep sessions of their own.
    pub session_scope: SessionScope,
    /// Channel turns run at once across all chats; more wait in the inbox.
    pub max_concurrent_turns: usize,
    /// Answered messages and sent replies are deleted after this many days (conversations
    /// themselves stay in their sessions).
    pub retention_days: u32,
    pub pairing: PairingConfig,
    pub outbox: OutboxConfig,
    pub telegram: TelegramConfig,
    pub whatsapp: WhatsAppConfig,
    pub discord: DiscordConfig,
    pub slack: SlackConfig,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        Self {
            session_scope: SessionScope::PerPeer,
            max_concurrent_turns: 16,
            retention_days: 30,
            pairing: PairingConfig::default(),
            outbox: OutboxConfig::default(),
            telegram: TelegramConfig::default(),
            whatsapp: WhatsAppConfig::default(),
            discord: DiscordConfig::default(),
            slack: SlackConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionScope {
    PerPeer,
    Main,
}

/// Who may reach the model through a channel's direct messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DmPolicy {
    /// Unknown senders get a one-time code; the owner approves it with
    /// `moltbot pairing approve <channel> <code>`.
    Pairing,
    /// Only senders in `allow_from` (and approved ones); others are ignored silently.
    Allowlist,
    /// Anyone. Only for bots nobody else can find.
    Open,
}

/// When the bot answers in groups and public channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupPolicy {
    /// Only when mentioned or replied to.
    Mention,
    /// Every message.
    All,
    /// Never.
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairingConfig {
    /// How long a pairing code stays valid, in seconds.
    pub code_ttl_secs: u64,
    /// Codes waiting for approval per channel; senders past this get nothing.
    pub max_pending: usize,
    /// A sender who keeps writing is reminded of their code at most this often, in seconds.
    pub remind_after_secs: u64,
}

impl Default for PairingConfig {
    fn default() -> Self {
        Self {
            code_ttl_secs: 3600,
            max_pending: 20,
            remind_after_secs: 600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Attempts before a reply is given up (marked failed); backoff doubles from 1 s up to
    /// `max_backoff_secs`, or follows the platform's retry-after.
    pub max_attempts: u32,
    pub max_backoff_secs: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            max_backoff_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TelegramMode {
    /// `getUpdates` long polling: works behind NAT, nothing to expose.
    Polling,
    /// Telegram posts updates to `/channels/telegram/webhook` (register it with
    /// `setWebhook`, giving `webhook_secret` as `secret_token`).
    Webhook,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    pub enabled: bool,
    /// From @BotFather. Also `MOLTBOT_CHANNELS__TELEGRAM__BOT_TOKEN`.
    pub bot_token: Option<Secret>,
    /// Bot API base URL (tests point it at a loopback fake).
    pub api_base: String,
    pub mode: TelegramMode,
    /// Checked against `X-Telegram-Bot-Api-Secret-Token` in webhook mode (required there).
    pub webhook_secret: Option<Secret>,
    /// Long-poll timeout, in seconds.
    pub poll_timeout_secs: u64,
    pub dm_policy: DmPolicy,
    /// Telegram user ids (numbers, as text) always allowed.
    pub allow_from: Vec<String>,
    pub groups: GroupPolicy,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            bot_token: None,
            api_base: "https://api.telegram.org".into(),
            mode: TelegramMode::Polling,
            webhook_secret: None,
            poll_timeout_secs: 30,
            dm_policy: DmPolicy::Pairing,
            allow_from: Vec::new(),
            groups: GroupPolicy::Mention,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhatsAppConfig {
    pub enabled: bool,
    /// A Cloud API access token (system user token).
    pub access_token: Option<Secret>,
    /// The sending phone number's id (not the number itself).
    pub phone_number_id: String,
    /// What you typed as "Verify token" when subscribing the webhook.
    pub verify_token: Option<Secret>,
    /// The app secret: webhook posts are signed with it (`X-Hub-Signature-256`).
    pub app_secret: Option<Secret>,
    /// Graph API base including the version.
    pub api_base: String,
    pub dm_policy: DmPolicy,
    /// Phone numbers (digits only, with country code) always allowed.
    pub allow_from: Vec<String>,
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            access_token: None,
            phone_number_id: String::new(),
            verify_token: None,
            app_secret: None,
            api_base: "https://graph.facebook.com/v21.0".into(),
            dm_policy: DmPolicy::Pairing,
            allow_from: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordConfig {
    pub enabled: bool,
    pub bot_token: Option<Secret>,
    /// REST base including the version.
    pub api_base: String,
    /// Gateway WebSocket URL (normally asked of `GET /gateway/bot`; set here to skip that).
    pub gateway_url: Option<String>,
    pub dm_policy: DmPolicy,
    /// Discord user ids (snowflakes) always allowed.
    pub allow_from: Vec<String>,
    pub groups: GroupPolicy,
}

impl Default for DiscordConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            bot_token: None,
            api_base: "https://discord.com/api/v10".into(),
            gateway_url: None,
            dm_policy: DmPolicy::Pairing,
            allow_from: Vec::new(),
            groups: GroupPolicy::Mention,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackConfig {
    pub enabled: bool,
    /// `xoxb-…` bot token.
    pub bot_token: Option<Secret>,
    /// Events API requests are signed with it; unsigned or stale requests get 401.
    pub signing_secret: Option<Secret>,
    /// Web API base.
    pub api_base: String,
    pub dm_policy: DmPolicy,
    /// Slack user ids (`U…`) always allowed.
    pub allow_from: Vec<String>,
    pub groups: GroupPolicy,
}

impl Default for SlackConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            bot_token: None,
            signing_secret: None,
            api_base: "https://slack.com/api".into(),
            dm_policy: DmPolicy::Pairing,
            allow_from: Vec::new(),
            groups: GroupPolicy::Mention,
        }
    }
}

fn missing(field: &str, why: &str) -> ConfigError {
    ConfigError::Invalid(format!("{field} is required {why}, got nothing"))
}

fn has(s: &Option<Secret>) -> bool {
    s.as_ref().is_some_and(|s| !s.is_empty())
}

impl ChannelsConfig {
    /// An enabled channel must have what it needs to work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.telegram;
        if t.enabled {
            if !has(&t.bot_token) {
                return Err(missing(
                    "channels.telegram.bot_token",
                    "when channels.telegram.enabled = true",
                ));
            }
            if t.mode == TelegramMode::Webhook && !has(&t.webhook_secret) {
                return Err(missing(
                    "channels.telegram.webhook_secret",
                    "when channels.telegram.mode = \"webhook\"",
                ));
            }
            in_range(
                "channels.telegram.poll_timeout_secs",
                t.poll_timeout_secs,
                1,
                50,
            )?;
        }
        let w = &self.whatsapp;
        if w.enabled {
            let why = "when channels.whatsapp.enabled = true";
            if !has(&w.access_token) {
                return Err(missing("channels.whatsapp.access_token", why));
            }
            if w.phone_number_id.is_empty() {
                return Err(missing("channels.whatsapp.phone_number_id", why));
            }
            if !has(&w.verify_token) {
                return Err(missing("channels.whatsapp.verify_token", why));
            }
            if !has(&w.app_secret) {
                return Err(missing("channels.whatsapp.app_secret", why));
            }
        }
        if self.discord.enabled && !has(&self.discord.bot_token) {
            return Err(missing(
                "channels.discord.bot_token",
                "when channels.discord.enabled = true",
            ));
        }
        let s = &self.slack;
        if s.enabled {
            let why = "when channels.slack.enabled = true";
            if !has(&s.bot_token) {
                return Err(missing("channels.slack.bot_token", why));
            }
            if !has(&s.signing_secret) {
                return Err(missing("channels.slack.signing_secret", why));
            }
        }
        let p = &self.pairing;
        in_range(
            "channels.pairing.code_ttl_secs",
            p.code_ttl_secs,
            60,
            7 * 86_400,
        )?;
        in_range("channels.pairing.max_pending", p.max_pending, 1, 10_000)?;
        in_range(
            "channels.pairing.remind_after_secs",
            p.remind_after_secs,
            10,
            86_400,
        )?;
        in_range(
            "channels.outbox.max_backoff_secs",
            self.outbox.max_backoff_secs,
            1,
            86_400,
        )?;
        in_range(
            "channels.max_concurrent_turns",
            self.max_concurrent_turns,
            1,
            10_000,
        )?;
        in_range("channels.retention_days", self.retention_days, 1, 3650)?;
        in_range(
            "channels.outbox.max_attempts",
            self.outbox.max_attempts,
            1,
            1000,
        )?;
        Ok(())
    }

    /// Names of the enabled channels.
    pub fn enabled(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.telegram.enabled {
            v.push("telegram");
        }
        if self.whatsapp.enabled {
            v.push("whatsapp");
        }
        if self.discord.enabled {
            v.push("discord");
        }
        if self.slack.enabled {
            v.push("slack");
        }
        v
    }
}
