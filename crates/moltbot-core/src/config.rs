//! The configuration tree. One set of serde structs, layered:
//! built-in defaults → TOML file → environment (`MOLTBOT_SECTION__KEY=value`) → CLI flags.
//!
//! Unknown keys anywhere are errors that name the key, so a typo never silently falls back to
//! a default. Secrets are [`Secret`]s and never print.

use crate::Secret;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

mod channels;
mod filter;
mod knowledge;
mod router;
mod tools;
mod understanding;
pub use channels::{
    ChannelsConfig, DiscordConfig, DmPolicy, GroupPolicy, OutboxConfig, PairingConfig,
    SessionScope, SlackConfig, TelegramConfig, TelegramMode, WhatsAppConfig,
};
pub use filter::{FilterConfig, DEFAULT_FALLBACK_MESSAGE};
pub use knowledge::KnowledgeConfig;
pub use router::{Grounding, RouterConfig};
pub use tools::{
    AgentConfig, BrowserConfig, CronConfig, ExecConfig, ExecPolicy, MemoryConfig, MisfirePolicy,
    SkillsConfig, ToolsConfig, WebFetchConfig,
};
pub use understanding::{EncoderChoice, EncoderPrecision, UnderstandingConfig};

/// The example config written by `moltbot config init`; a test checks that it parses and
/// equals the defaults.
/// `Ok` when `v` is within `lo..=hi`; otherwise the error every range check of the config
/// gives, naming the field, the limits and the value.
pub(crate) fn in_range<T: PartialOrd + std::fmt::Display>(
    field: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), ConfigError> {
    if lo <= v && v <= hi {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{field} must be between {lo} and {hi}, got {v}"
        )))
    }
}

pub const EXAMPLE_CONFIG: &str = include_str!("../moltbot.example.toml");

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub data: DataConfig,
    pub sessions: SessionsConfig,
    pub model: ModelConfig,
    pub channels: ChannelsConfig,
    pub understanding: UnderstandingConfig,
    pub knowledge: KnowledgeConfig,
    pub router: RouterConfig,
    pub tools: ToolsConfig,
    pub bus: BusConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address to listen on. Anything but loopback requires `token`.
    pub bind: IpAddr,
    pub port: u16,
    /// Bearer token for every API route except the health probes. Also read from
    /// `MOLTBOT_GATEWAY_TOKEN`.
    pub token: Option<Secret>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Turns processed at once across all sessions; more get HTTP 429.
    pub max_concurrent_turns: usize,
    /// Longest user message accepted, in characters.
    pub max_message_chars: usize,
    /// Keepalive `tick` interval of the WebSocket protocol, in milliseconds.
    pub tick_interval_ms: u64,
    /// How long shutdown waits for in-flight turns, in seconds.
    pub shutdown_grace_secs: u64,
    /// On SIGTERM, keep serving this many seconds with `/health` and `/readyz` answering
    /// 503 `draining` before closing the listener, so a load balancer or Kubernetes takes
    /// the instance out of rotation while it still answers (a rolling update then drops
    /// nothing). 0 closes at once, right for a single machine.
    pub drain_delay_secs: u64,
    /// Failed token checks (API, admin API) allowed per client address per minute; past
    /// that the address gets 429 for the rest of the minute, right token or not, so tokens
    /// cannot be guessed at speed. 0 turns the limit off.
    pub auth_failures_per_minute: u32,
    /// Serve `/metrics` without the token (for scrapers that cannot send one).
    pub public_metrics: bool,
    /// Bearer token of the admin API (`/admin/*`: model load, traffic split, promote,
    /// rollback). Also read from `ADMIN_TOKEN`. Without it the admin API is off.
    pub admin_token: Option<Secret>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 18789,
            token: None,
            max_body_bytes: 1024 * 1024,
            max_concurrent_turns: 256,
            max_message_chars: 32_000,
            tick_interval_ms: 30_000,
            shutdown_grace_secs: 30,
            drain_delay_secs: 0,
            auth_failures_per_minute: 10,
            public_metrics: false,
            admin_token: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Where the store and the model cache live. Default: `~/.moltbot`.
    pub dir: Option<PathBuf>,
    /// Keep sessions, channels and cron in PostgreSQL instead of the SQLite file in `dir`
    /// (`postgres://user:password@host:5432/db`): what several gateway replicas share.
    /// Also read from `MOLTBOT_DATA__DATABASE_URL`.
    pub database_url: Option<Secret>,
    /// The PostgreSQL schema for the tables (created if missing). Default: `public`.
    pub database_schema: Option<String>,
}

impl DataConfig {
    pub fn resolved_dir(&self) -> PathBuf {
        match &self.dir {
            Some(d) => expand_home(d),
            None => home_dir().join(".moltbot"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Turns (user + assistant pairs) of history fed to the model.
    pub max_turns: usize,
    /// Sessions whose recent history is kept in RAM.
    pub hot_cache_sessions: usize,
    /// RAM for cached histories across all sessions, in MiB.
    pub hot_cache_mb: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            max_turns: 128,
            hot_cache_sessions: 4096,
            hot_cache_mb: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Local,
    Openai,
    Anthropic,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Providers to use, in failover order. The first answers; on a connection error, a
    /// timeout or a 5xx the next one is tried.
    pub providers: Vec<ProviderKind>,
    pub system_prompt: String,
    pub max_tokens: u32,
    pub temperature: f32,
    pub local: LocalModelConfig,
    pub openai: OpenAiConfig,
    pub anthropic: AnthropicConfig,
    /// Checks on every reply before it reaches the user.
    pub filter: FilterConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            providers: vec![ProviderKind::Local],
            // Plain on purpose: the embedded 135M model answers worse when given a name
            // (measured: "capital of France" went from "Paris" to nonsense).
            system_prompt: "You are a helpful assistant. Answer briefly and accurately."
                .to_string(),
            max_tokens: 256,
            temperature: 0.7,
            local: LocalModelConfig::default(),
            openai: OpenAiConfig::default(),
            anthropic: AnthropicConfig::default(),
            filter: FilterConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalModelConfig {
    /// A GGUF file. Empty: the embedded default (SmolLM2-135M-Instruct), fetched on first run.
    pub path: Option<PathBuf>,
    /// Decode threads; 0 picks from the environment snapshot.
    pub threads: usize,
    /// Context window in tokens.
    pub context_size: u32,
    /// Requests decoded together in one batch (continuous batching).
    pub parallel: usize,
    /// Requests that may wait for the model; more are refused at once (HTTP 503).
    pub queue: usize,
    /// KV cache cells shared by all sequences (running requests, idle sessions kept warm,
    /// cached prefixes). 0: twice `context_size`.
    pub kv_cache_tokens: u32,
    /// RAM for the KV state of conversations pushed out of the KV cache, so their next turn
    /// is restored instead of re-read. 0 turns the session cache off.
    pub session_cache_mb: u64,
    /// Common prompt prefixes (system prompts, frequent openings) kept in the KV cache. 0
    /// turns the prefix cache off.
    pub prefix_cache_entries: usize,
    /// Reuse KV state across requests at all (the previous turn, shared prefixes, RAM).
    /// Off reads every prompt in full, as a baseline for benchmarks and for debugging.
    pub reuse_kv: bool,
}

impl Default for LocalModelConfig {
    fn default() -> Self {
        Self {
            path: None,
            threads: 0,
            context_size: 4096,
            parallel: 4,
            queue: 256,
            kv_cache_tokens: 0,
            session_cache_mb: 256,
            prefix_cache_entries: 8,
            reuse_kv: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiConfig {
    /// Base URL up to and including `/v1` (OpenAI, Ollama `http://127.0.0.1:11434/v1`, vLLM…).
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub model: String,
    pub timeout_secs: u64,
    pub max_retries: u32,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".to_string(),
            api_key: None,
            model: "gpt-4o-mini".to_string(),
            timeout_secs: 120,
            max_retries: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnthropicConfig {
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub model: String,
    pub timeout_secs: u64,
    pub max_retries: u32,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.anthropic.com".to_string(),
            api_key: None,
            model: "claude-3-5-haiku-latest".to_string(),
            timeout_secs: 120,
            max_retries: 2,
        }
    }
}

/// Which message bus carries turns between gateway replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusKind {
    /// Turns run in the process that received them (one machine).
    #[default]
    InProcess,
    /// Turns go through Kafka topics shared by every replica.
    Kafka,
}

/// Scale-out over Kafka: every replica publishes the turns it receives to one topic keyed
/// by session id (so one consumer runs a session's turns, in order) and reads the replies
/// for its own callers from a topic of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub kind: BusKind,
    /// Kafka bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Topics are `<prefix>.turns` and `<prefix>.replies.<replica_id>`.
    pub topic_prefix: String,
    /// Consumer group shared by all replicas.
    pub group_id: String,
    /// This replica's name, unique among replicas and stable across its restarts (a pod
    /// name). Default: the host name.
    pub replica_id: Option<String>,
    /// Partitions of the turns topic when it is created: the most replicas that can share
    /// the work.
    pub partitions: u32,
    /// How long a caller waits for some replica to answer its turn.
    pub turn_timeout_secs: u64,
    /// Turns a replica runs at once from the topic; past that it stops reading.
    pub max_in_flight: usize,
    /// How fast a dead replica's partitions move to the others (Kafka's consumer session
    /// timeout).
    pub session_timeout_ms: u32,
    /// How long a fetch may wait at the broker for new records (Kafka's
    /// `fetch.wait.max.ms`). A Kafka broker answers as soon as records arrive, so a larger
    /// value only saves idle round trips; a broker that waits the whole time (tansu) adds up
    /// to this much latency per hop, while a small value costs a fetch per partition this
    /// often (a storage engine behind the broker, such as S3, may not keep up).
    pub fetch_wait_ms: u32,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            kind: BusKind::InProcess,
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "moltbot".into(),
            group_id: "moltbot-gateway".into(),
            replica_id: None,
            partitions: 12,
            turn_timeout_secs: 300,
            max_in_flight: 256,
            session_timeout_ms: 10_000,
            fetch_wait_ms: 10,
        }
    }
}

impl BusConfig {
    /// The configured replica id, else the host name, else a fixed name.
    pub fn resolved_replica_id(&self) -> String {
        if let Some(id) = self.replica_id.as_deref().filter(|s| !s.trim().is_empty()) {
            return id.trim().to_string();
        }
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "moltbot".into())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `moltbot=debug,tower_http=info`.
    pub level: String,
    /// One JSON object per line instead of human-readable text.
    pub json: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_string(),
            json: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} cannot be read: {cause}")]
    Read { path: PathBuf, cause: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Where the config file lives when `--config` is not given.
pub fn default_config_path() -> PathBuf {
    home_dir().join(".moltbot").join("moltbot.toml")
}

impl Config {
    /// Load defaults, then `path` (if it exists; a missing explicit file is an error), then
    /// `MOLTBOT_*__*` environment variables. CLI flags are applied by the caller afterwards
    /// with [`Config::validate`] again.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    /// [`Config::load`] with an explicit environment (tests must not mutate the process env).
    pub fn load_with_env(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        let file = match path {
            Some(p) => {
                if !p.exists() {
                    return Err(ConfigError::Read {
                        path: p.to_path_buf(),
                        cause: "no such file".into(),
                    });
                }
                Some(p.to_path_buf())
            }
            None => Some(default_config_path()).filter(|p| p.exists()),
        };
        if let Some(p) = &file {
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                path: p.clone(),
                cause: e.to_string(),
            })?;
            // Parse first on our own so syntax errors carry the file name and line.
            toml::from_str::<toml::Value>(&text).map_err(|e| ConfigError::Read {
                path: p.clone(),
                cause: e.to_string(),
            })?;
            fig = fig.merge(Toml::string(&text));
        }
        // Only `MOLTBOT_SECTION__KEY` variables are config; others such as
        // `MOLTBOT_GATEWAY_TOKEN` are handled below.
        let nested: Vec<(String, String)> = env
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix("MOLTBOT_")?;
                rest.contains("__")
                    .then(|| (rest.to_ascii_lowercase().replace("__", "."), v.clone()))
            })
            .collect();
        for (key, value) in nested {
            let typed = env_toml(&key, &value);
            let as_string = format!("{key} = {}", toml::Value::String(value.clone()));
            // A value that reads as a number or bool may be meant as a string (a token of
            // digits, a model named `1`): keep the typed reading only if the config accepts it.
            let typed_fits = typed == as_string
                || fig
                    .clone()
                    .merge(Toml::string(&typed))
                    .extract::<Config>()
                    .is_ok();
            let string_fits = !typed_fits
                && fig
                    .clone()
                    .merge(Toml::string(&as_string))
                    .extract::<Config>()
                    .is_ok();
            fig = fig.merge(Toml::string(if string_fits { &as_string } else { &typed }));
        }
        let mut cfg: Config = fig.extract().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            ConfigError::Invalid(msgs.join("; "))
        })?;
        if let Some((_, token)) = env.iter().find(|(k, _)| k == "MOLTBOT_GATEWAY_TOKEN") {
            if !token.is_empty() {
                cfg.gateway.token = Some(Secret::new(token.clone()));
            }
        }
        if let Some((_, token)) = env.iter().find(|(k, _)| k == "ADMIN_TOKEN") {
            if !token.is_empty() {
                cfg.gateway.admin_token = Some(Secret::new(token.clone()));
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check values that serde cannot: ranges, combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.bus.kind == BusKind::Kafka {
            if self.bus.brokers.trim().is_empty() {
                return bad(
                    "bus.brokers must name at least one broker when bus.kind = \"kafka\"".into(),
                );
            }
            in_range("bus.partitions", self.bus.partitions, 1, 1024)?;
            in_range("bus.max_in_flight", self.bus.max_in_flight, 1, 100_000)?;
            if self.bus.fetch_wait_ms > 300_000 {
                return bad(format!(
                    "bus.fetch_wait_ms must be at most 300000 (5 minutes), got {}",
                    self.bus.fetch_wait_ms
                ));
            }
            let id = self.bus.resolved_replica_id();
            if !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return bad(format!(
                    "bus.replica_id may hold only letters, digits, '-', '_' and '.', got {id:?}"
                ));
            }
        }
        if self.gateway.max_body_bytes < 1024 {
            return bad(format!(
                "gateway.max_body_bytes must be at least 1024, got {}",
                self.gateway.max_body_bytes
            ));
        }
        in_range(
            "gateway.max_concurrent_turns",
            self.gateway.max_concurrent_turns as u64,
            1,
            1_000_000,
        )?;
        in_range(
            "gateway.max_message_chars",
            self.gateway.max_message_chars as u64,
            1,
            10_000_000,
        )?;
        in_range(
            "model.max_tokens",
            u64::from(self.model.max_tokens),
            1,
            32_768,
        )?;
        in_range(
            "sessions.hot_cache_sessions",
            self.sessions.hot_cache_sessions as u64,
            1,
            10_000_000,
        )?;
        in_range(
            "model.local.context_size",
            u64::from(self.model.local.context_size),
            256,
            1_048_576,
        )?;
        in_range(
            "model.local.parallel",
            self.model.local.parallel as u64,
            1,
            64,
        )?;
        in_range(
            "model.local.prefix_cache_entries",
            self.model.local.prefix_cache_entries as u64,
            0,
            64,
        )?;
        in_range(
            "model.local.session_cache_mb",
            self.model.local.session_cache_mb,
            0,
            1 << 20,
        )?;
        if self.model.local.kv_cache_tokens != 0 {
            in_range(
                "model.local.kv_cache_tokens",
                u64::from(self.model.local.kv_cache_tokens),
                u64::from(self.model.local.context_size),
                16_777_216,
            )?;
        }
        in_range(
            "model.openai.timeout_secs",
            self.model.openai.timeout_secs,
            1,
            86_400,
        )?;
        in_range(
            "model.anthropic.timeout_secs",
            self.model.anthropic.timeout_secs,
            1,
            86_400,
        )?;
        in_range("sessions.max_turns", self.sessions.max_turns, 1, 1024)?;
        if self.model.providers.is_empty() {
            return bad("model.providers must name at least one provider, got []".into());
        }
        in_range("model.temperature", self.model.temperature, 0.0, 2.0)?;
        if self.gateway.tick_interval_ms < 100 {
            return bad(format!(
                "gateway.tick_interval_ms must be at least 100, got {}",
                self.gateway.tick_interval_ms
            ));
        }
        in_range(
            "gateway.drain_delay_secs",
            self.gateway.drain_delay_secs,
            0,
            300,
        )?;
        self.model.filter.validate()?;
        self.channels.validate()?;
        self.understanding.validate()?;
        self.knowledge.validate()?;
        self.router.validate()?;
        self.tools.validate()?;
        Ok(())
    }

    /// Refuse to expose an unauthenticated gateway beyond this machine.
    pub fn check_bind_safety(&self) -> Result<(), ConfigError> {
        let has_token = self.gateway.token.as_ref().is_some_and(|t| !t.is_empty());
        if !self.gateway.bind.is_loopback() && !has_token {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {} without a token: anyone on the network could use \
                 this gateway.\nhint: set gateway.token in the config or MOLTBOT_GATEWAY_TOKEN, \
                 or bind to 127.0.0.1",
                self.gateway.bind
            )));
        }
        Ok(())
    }
}

/// A one-line TOML document `a.b.c = value`, so env values are typed like TOML values
/// (`18790` is a number, `true` a bool, `["local","openai"]` a list); anything that is not a
/// TOML literal is taken as a string.
fn env_toml(key: &str, value: &str) -> String {
    let literal = format!("{key} = {value}");
    if toml::from_str::<toml::Value>(&literal).is_ok() {
        literal
    } else {
        format!("{key} = {}", toml::Value::String(value.to_string()))
    }
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `~/x` → `<home>/x`; other paths unchanged.
pub fn expand_home(p: &Path) -> PathBuf {
    match p.strip_prefix("~") {
        Ok(rest) => home_dir().join(rest),
        Err(_) => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("moltbot.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn example_config_parses_to_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, EXAMPLE_CONFIG);
        let cfg = Config::load_with_env(Some(&p), &[]).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "[gateway]\nprot = 1\n");
        let err = Config::load_with_env(Some(&p), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_types_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "[gateway]\nport = 1000\n");
        let env = vec![
            ("MOLTBOT_GATEWAY__PORT".to_string(), "2000".to_string()),
            (
                "MOLTBOT_MODEL__OPENAI__BASE_URL".to_string(),
                "http://127.0.0.1:9/v1".to_string(),
            ),
            ("MOLTBOT_GATEWAY_TOKEN".to_string(), "tok".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let cfg = Config::load_with_env(Some(&p), &env).unwrap();
        assert_eq!(cfg.gateway.port, 2000);
        assert_eq!(cfg.model.openai.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(cfg.gateway.token.unwrap().expose(), "tok");
    }

    #[test]
    fn env_values_that_look_like_numbers_can_still_be_strings() {
        let env = vec![
            ("MOLTBOT_GATEWAY__TOKEN".to_string(), "123456".to_string()),
            (
                "MOLTBOT_MODEL__OPENAI__MODEL".to_string(),
                "true".to_string(),
            ),
            ("MOLTBOT_GATEWAY__PORT".to_string(), "2001".to_string()),
        ];
        let cfg = Config::load_with_env(None, &env).unwrap();
        assert_eq!(cfg.gateway.token.unwrap().expose(), "123456");
        assert_eq!(cfg.model.openai.model, "true");
        assert_eq!(cfg.gateway.port, 2001);
        // A number where a number is wanted, but out of range: still an error.
        let env = vec![("MOLTBOT_GATEWAY__PORT".to_string(), "99999".to_string())];
        assert!(Config::load_with_env(None, &env).is_err());
    }

    #[test]
    fn unknown_env_key_is_an_error() {
        let env = vec![("MOLTBOT_GATEWAY__PROT".to_string(), "1".to_string())];
        let err = Config::load_with_env(None, &env).unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn range_errors_name_field_limit_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "[sessions]\nmax_turns = 0\n");
        let err = Config::load_with_env(Some(&p), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sessions.max_turns"), "{err}");
        assert!(err.contains("between 1 and 1024"), "{err}");
        assert!(err.contains("got 0"), "{err}");
    }

    #[test]
    fn encoder_tuning_is_bounded_and_named() {
        let dir = tempfile::tempdir().unwrap();
        for (text, field, limit, got) in [
            (
                "[understanding]\ntune_layers = 7\n",
                "understanding.tune_layers",
                "at most 6",
                "got 7",
            ),
            (
                "[understanding]\ntune_layers = 2\ntune_epochs = 0\n",
                "understanding.tune_epochs",
                "between 1 and 20",
                "got 0",
            ),
        ] {
            let p = write(&dir, text);
            let err = Config::load_with_env(Some(&p), &[])
                .unwrap_err()
                .to_string();
            for part in [field, limit, got] {
                assert!(err.contains(part), "{err}");
            }
        }
        let p = write(&dir, "[understanding]\ntune_layers = 2\n");
        let cfg = Config::load_with_env(Some(&p), &[]).unwrap();
        assert_eq!(
            (cfg.understanding.tune_layers, cfg.understanding.tune_epochs),
            (2, 2)
        );
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let mut cfg = Config::default();
        cfg.gateway.bind = "0.0.0.0".parse().unwrap();
        assert!(cfg.check_bind_safety().is_err());
        cfg.gateway.token = Some(Secret::new("t"));
        assert!(cfg.check_bind_safety().is_ok());
    }

    #[test]
    fn secrets_do_not_print() {
        let mut cfg = Config::default();
        cfg.model.openai.api_key = Some(Secret::new("sk-abc123"));
        let shown = format!("{cfg:?} {}", toml::to_string(&cfg).unwrap());
        assert!(!shown.contains("sk-abc123"));
    }
}
