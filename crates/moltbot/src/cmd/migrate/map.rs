//! The OpenClaw config (a JSON value) mapped onto moltbot settings: model providers,
//! channels and their allowlists, the gateway token and port. Pure: no I/O.

use super::source::{kind_of, scalar_string};
use super::{Item, Status};
use serde_json::{Map, Value};

/// One moltbot config key to set.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// Dotted TOML path, e.g. `channels.telegram.bot_token`.
    pub key: String,
    pub value: toml::Value,
    /// Shown as `set`, never as the value.
    pub secret: bool,
    /// The OpenClaw key it comes from.
    pub from: String,
}

/// What the config maps to.
#[derive(Debug, Default)]
pub struct Mapped {
    pub settings: Vec<Setting>,
    pub items: Vec<Item>,
    /// Senders to allow in the store: `(channel, sender id, from)`.
    pub allow: Vec<(String, String, String)>,
}

impl Mapped {
    fn set(&mut self, key: &str, value: impl Into<toml::Value>, from: &str) {
        self.settings.push(Setting {
            key: key.into(),
            value: value.into(),
            secret: false,
            from: from.into(),
        });
    }

    fn set_secret(&mut self, key: &str, value: String, from: &str) {
        self.settings.push(Setting {
            key: key.into(),
            value: value.into(),
            secret: true,
            from: from.into(),
        });
    }

    fn not_mapped(&mut self, what: impl Into<String>, why: impl Into<String>) {
        self.items.push(Item::new(Status::NotMapped, what, why));
    }
}

/// Top-level keys that are OpenClaw's own bookkeeping: reported once, not one by one.
const BOOKKEEPING: [&str; 3] = ["meta", "wizard", "$schema"];
/// Top-level keys read here or by the caller (`agents` for the workspace).
const HANDLED: [&str; 4] = ["agents", "models", "channels", "gateway"];

pub fn config(cfg: &Value) -> Mapped {
    let mut m = Mapped::default();
    model(cfg, &mut m);
    if let Some(channels) = cfg.get("channels").and_then(Value::as_object) {
        for (name, c) in channels {
            channel(name, c, &mut m);
        }
    }
    gateway(cfg, &mut m);
    let agents = &cfg["agents"];
    let count = agents["entries"]
        .as_object()
        .map(|o| o.len())
        .or_else(|| agents["list"].as_array().map(Vec::len))
        .unwrap_or(0);
    if count > 1 {
        m.not_mapped(
            format!("agents ({count})"),
            "moltbot runs one assistant: the default agent's model and workspace are used; \
             every agent's transcripts are imported",
        );
    }
    if let Some(obj) = cfg.as_object() {
        for key in obj.keys() {
            if !HANDLED.contains(&key.as_str()) && !BOOKKEEPING.contains(&key.as_str()) {
                m.not_mapped(key.as_str(), "no moltbot equivalent");
            }
        }
    }
    m
}

/// A secret as a plain string, or why it cannot be copied.
fn secret(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if s == "__OPENCLAW_REDACTED__" => {
            Err("the file holds a redacted placeholder, not the value".into())
        }
        Value::String(s) if s.starts_with("${") && s.ends_with('}') => Err(format!(
            "it is read from the environment variable {}",
            &s[2..s.len() - 1]
        )),
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Object(r) => Err(format!(
            "it is a secret reference ({} {})",
            r.get("source").and_then(Value::as_str).unwrap_or("?"),
            r.get("id").and_then(Value::as_str).unwrap_or("?")
        )),
        other => Err(format!("expected a string, got {}", kind_of(other))),
    }
}

fn env_hint(key: &str) -> String {
    format!(
        "hint: set MOLTBOT_{}",
        key.to_uppercase().replace('.', "__")
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    OpenAi,
    Anthropic,
}

fn model(cfg: &Value, m: &mut Mapped) {
    let defaults = &cfg["agents"]["defaults"];
    let (primary, fallbacks) = match &defaults["model"] {
        Value::String(s) => (Some(s.clone()), Vec::new()),
        Value::Object(o) => (
            o.get("primary").and_then(Value::as_str).map(str::to_string),
            o.get("fallbacks")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => (None, Vec::new()),
    };
    let providers = cfg["models"]["providers"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let Some(primary) = primary else {
        if !providers.is_empty() {
            m.not_mapped(
                "models.providers",
                "no agents.defaults.model.primary says which one the assistant uses",
            );
        }
        return;
    };
    let mut used: Vec<Api> = Vec::new();
    let mut used_providers: Vec<String> = Vec::new();
    for (i, model_ref) in std::iter::once(primary).chain(fallbacks).enumerate() {
        let from = if i == 0 {
            "agents.defaults.model.primary".to_string()
        } else {
            format!("agents.defaults.model.fallbacks[{}]", i - 1)
        };
        let Some((provider, model_id)) = model_ref.split_once('/') else {
            m.not_mapped(format!("{from} {model_ref:?}"), "expected provider/model");
            continue;
        };
        let p = providers.get(provider).cloned().unwrap_or(Value::Null);
        let api = p.get("api").and_then(Value::as_str).unwrap_or("");
        let kind = match (provider, api) {
            (_, "openai-completions" | "openai-responses" | "openai") => Api::OpenAi,
            (_, "anthropic-messages" | "anthropic") => Api::Anthropic,
            ("openai", "") => Api::OpenAi,
            ("anthropic", "") => Api::Anthropic,
            _ => {
                let api = if api.is_empty() { "built-in" } else { api };
                m.not_mapped(
                    format!("{from} {model_ref}"),
                    format!(
                        "provider {provider:?} (api {api}) has no moltbot equivalent; moltbot \
                         speaks OpenAI-compatible and Anthropic APIs"
                    ),
                );
                continue;
            }
        };
        if used.contains(&kind) {
            m.not_mapped(
                format!("{from} {model_ref}"),
                "moltbot has one provider of each kind (openai, anthropic); the first one is kept",
            );
            continue;
        }
        used.push(kind);
        used_providers.push(provider.to_string());
        let section = match kind {
            Api::OpenAi => "model.openai",
            Api::Anthropic => "model.anthropic",
        };
        m.set(&format!("{section}.model"), model_id, &from);
        if let Some(url) = p.get("baseUrl").and_then(Value::as_str) {
            m.set(
                &format!("{section}.base_url"),
                url,
                &format!("models.providers.{provider}.baseUrl"),
            );
        }
        let key_name = match kind {
            Api::OpenAi => "OPENAI_API_KEY",
            Api::Anthropic => "ANTHROPIC_API_KEY",
        };
        let key_field = format!("{section}.api_key");
        match (p.get("apiKey"), cfg["env"].get(key_name)) {
            (Some(v), _) => match secret(v) {
                Ok(s) => m.set_secret(
                    &key_field,
                    s,
                    &format!("models.providers.{provider}.apiKey"),
                ),
                Err(why) => m.not_mapped(
                    format!("models.providers.{provider}.apiKey"),
                    format!("{why}\n{}", env_hint(&key_field)),
                ),
            },
            (None, Some(v)) => match secret(v) {
                Ok(s) => m.set_secret(&key_field, s, &format!("env.{key_name}")),
                Err(why) => m.not_mapped(format!("env.{key_name}"), why),
            },
            (None, None) => m.not_mapped(
                format!("{provider} api key"),
                format!(
                    "not in the config (OpenClaw keeps OAuth and auth profiles elsewhere)\n{}",
                    env_hint(&key_field)
                ),
            ),
        }
    }
    if !used.is_empty() {
        let list: Vec<toml::Value> = used
            .iter()
            .map(|k| match k {
                Api::OpenAi => "openai".into(),
                Api::Anthropic => "anthropic".into(),
            })
            .collect();
        m.set("model.providers", list, "agents.defaults.model");
    }
    for name in providers.keys() {
        if !used_providers.contains(name) {
            m.not_mapped(
                format!("models.providers.{name}"),
                "not used by the default agent's model",
            );
        }
    }
}

fn channel(name: &str, c: &Value, m: &mut Mapped) {
    let Some(obj) = c.as_object() else {
        m.not_mapped(
            format!("channels.{name}"),
            format!("expected an object, got {}", kind_of(c)),
        );
        return;
    };
    // Keys of OpenClaw's channel object → ours: (theirs, ours, secret).
    let tokens: &[(&str, &str)] = match name {
        "telegram" => &[("botToken", "bot_token")],
        "discord" => &[("token", "bot_token")],
        "slack" => &[
            ("botToken", "bot_token"),
            ("signingSecret", "signing_secret"),
        ],
        "whatsapp" => &[],
        _ => {
            m.not_mapped(format!("channels.{name}"), "moltbot has no such channel");
            return;
        }
    };
    let mut left: Map<String, Value> = obj.clone();
    left.remove("enabled");
    let mut have_tokens = true;
    for (theirs, ours) in tokens {
        let from = format!("channels.{name}.{theirs}");
        let key = format!("channels.{name}.{ours}");
        match left.remove(*theirs).map(|v| secret(&v)) {
            Some(Ok(s)) => m.set_secret(&key, s, &from),
            Some(Err(why)) => {
                have_tokens = false;
                m.not_mapped(from, format!("{why}\n{}", env_hint(&key)));
            }
            None => have_tokens = false,
        }
    }
    if let Some(p) = left.remove("dmPolicy") {
        match p.as_str() {
            Some(p @ ("pairing" | "allowlist" | "open")) => {
                m.set(
                    &format!("channels.{name}.dm_policy"),
                    p,
                    &format!("channels.{name}.dmPolicy"),
                );
            }
            _ => m.not_mapped(
                format!("channels.{name}.dmPolicy {p}"),
                "moltbot knows pairing, allowlist and open",
            ),
        }
    }
    if let Some(list) = left.remove("allowFrom") {
        let from = format!("channels.{name}.allowFrom");
        let mut ids: Vec<toml::Value> = Vec::new();
        for entry in list.as_array().into_iter().flatten() {
            match scalar_string(entry).map(|s| sender_id(name, &s)) {
                Some(Some(id)) => {
                    ids.push(id.clone().into());
                    m.allow.push((name.to_string(), id, from.clone()));
                }
                _ => m.not_mapped(
                    format!("{from} entry {entry}"),
                    "not a sender id (a `*` wildcard is dm_policy = \"open\" in moltbot)",
                ),
            }
        }
        if !ids.is_empty() {
            m.set(&format!("channels.{name}.allow_from"), ids, &from);
        }
    }
    let enabled = obj.get("enabled").and_then(Value::as_bool).unwrap_or(true);
    match name {
        "whatsapp" => m.not_mapped(
            "channels.whatsapp (connection)",
            "OpenClaw links WhatsApp Web; moltbot uses the WhatsApp Cloud API (access_token, \
             phone_number_id, verify_token, app_secret): the channel stays disabled",
        ),
        _ if enabled && have_tokens => {
            m.set(
                &format!("channels.{name}.enabled"),
                true,
                &format!("channels.{name}"),
            );
        }
        _ if enabled => m.not_mapped(
            format!("channels.{name}.enabled"),
            format!(
                "left disabled: moltbot needs {}",
                tokens
                    .iter()
                    .map(|(_, o)| *o)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        ),
        _ => {}
    }
    if !left.is_empty() {
        let keys: Vec<&str> = left.keys().map(String::as_str).collect();
        m.not_mapped(
            format!("channels.{name}: {}", keys.join(", ")),
            "no moltbot equivalent",
        );
    }
}

/// A platform sender id from an allowFrom entry (`123`, `tg:123`, `telegram:123`), or
/// `None` for a wildcard.
fn sender_id(channel: &str, entry: &str) -> Option<String> {
    let mut s = entry.trim();
    for prefix in [channel, "tg", "user", "whatsapp", "discord", "slack"] {
        if let Some(rest) = s.strip_prefix(prefix).and_then(|r| r.strip_prefix(':')) {
            s = rest;
        }
    }
    if s.is_empty() || s == "*" {
        None
    } else {
        Some(s.to_string())
    }
}

fn gateway(cfg: &Value, m: &mut Mapped) {
    let g = &cfg["gateway"];
    if let Some(port) = g.get("port").and_then(Value::as_u64) {
        match i64::try_from(port) {
            Ok(p) if p > 0 && p <= 65_535 => m.set("gateway.port", p, "gateway.port"),
            _ => m.not_mapped(format!("gateway.port {port}"), "not a port"),
        }
    }
    match g["auth"].get("mode").and_then(Value::as_str) {
        Some("token") | None => {
            if let Some(t) = g["auth"].get("token") {
                match secret(t) {
                    Ok(s) => m.set_secret("gateway.token", s, "gateway.auth.token"),
                    Err(why) => m.not_mapped("gateway.auth.token", why),
                }
            }
        }
        Some(mode) => m.not_mapped(
            format!("gateway.auth.mode {mode}"),
            "moltbot authenticates clients with a token (gateway.token)",
        ),
    }
    match g.get("bind").and_then(Value::as_str) {
        None | Some("loopback") => {}
        Some(other) => m.not_mapped(
            format!("gateway.bind {other}"),
            "set gateway.bind to an address (moltbot binds 127.0.0.1 by default)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(m: &Mapped) -> Vec<(&str, String)> {
        m.settings
            .iter()
            .map(|s| (s.key.as_str(), s.value.to_string()))
            .collect()
    }

    #[test]
    fn anthropic_and_openai_fallback_map_in_order() {
        let cfg: Value = json5::from_str(
            r#"{
              // JSON5: comments and unquoted keys
              agents: { defaults: { model: { primary: "anthropic/claude-x", fallbacks: ["openai/gpt-y", "openrouter/z"] } } },
              models: { providers: { anthropic: { apiKey: "sk-ant-1" } } },
              env: { OPENAI_API_KEY: "sk-oa-2" },
            }"#,
        )
        .unwrap();
        let m = config(&cfg);
        let k = keys(&m);
        assert!(k.contains(&("model.anthropic.model", "\"claude-x\"".into())));
        assert!(k.contains(&("model.openai.model", "\"gpt-y\"".into())));
        assert!(k.contains(&("model.providers", "[\"anthropic\", \"openai\"]".into())));
        assert!(m
            .settings
            .iter()
            .any(|s| s.key == "model.openai.api_key" && s.secret));
        assert!(m
            .items
            .iter()
            .any(|i| i.what.contains("openrouter/z") && i.status == Status::NotMapped));
        // `env` is read for keys but is otherwise not a moltbot section.
        assert!(m.items.iter().any(|i| i.what == "env"));
    }

    #[test]
    fn channel_tokens_refs_and_allowlists() {
        let cfg: Value = serde_json::json!({
            "channels": {
                "telegram": { "botToken": "123:abc", "dmPolicy": "allowlist",
                              "allowFrom": [42, "tg:43", "*"], "streaming": "partial" },
                "discord": { "token": { "source": "env", "id": "DISCORD_BOT_TOKEN" } },
                "signal": { "enabled": true }
            }
        });
        let m = config(&cfg);
        let k = keys(&m);
        assert!(k.contains(&("channels.telegram.enabled", "true".into())));
        assert!(k.contains(&("channels.telegram.allow_from", "[\"42\", \"43\"]".into())));
        assert_eq!(m.allow.len(), 2);
        assert!(!k.iter().any(|(k, _)| k.starts_with("channels.discord")));
        let why = |what: &str| {
            m.items
                .iter()
                .find(|i| i.what.starts_with(what))
                .map(|i| i.detail.clone())
                .unwrap_or_default()
        };
        assert!(why("channels.discord.token").contains("DISCORD_BOT_TOKEN"));
        assert!(why("channels.discord.token").contains("MOLTBOT_CHANNELS__DISCORD__BOT_TOKEN"));
        assert!(why("channels.signal").contains("no such channel"));
        assert!(why("channels.telegram: streaming").contains("no moltbot equivalent"));
        assert_eq!(
            sender_id("whatsapp", "whatsapp:+1555"),
            Some("+1555".into())
        );
    }
}
