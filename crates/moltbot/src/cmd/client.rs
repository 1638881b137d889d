//! Talking to the running gateway from short CLI commands.

use crate::cli::GatewayClientArgs;
use anyhow::Context;
use moltbot_core::{Config, Secret};
use serde_json::Value;

pub struct GatewayClient {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
}

impl GatewayClient {
    pub fn new(cfg: &Config, args: GatewayClientArgs) -> anyhow::Result<Self> {
        let base = args.url.unwrap_or_else(|| {
            let host = if cfg.gateway.bind.is_unspecified() {
                "127.0.0.1".to_string()
            } else if cfg.gateway.bind.is_ipv6() {
                format!("[{}]", cfg.gateway.bind)
            } else {
                cfg.gateway.bind.to_string()
            };
            format!("http://{host}:{}", cfg.gateway.port)
        });
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(180))
                .build()?,
            base: base.trim_end_matches('/').to_string(),
            token: args.token.or_else(|| cfg.gateway.token.clone()),
        })
    }

    /// GET or POST `path`; a non-2xx answer becomes an error carrying the gateway's message.
    pub async fn call(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = match &body {
            Some(b) => self.http.post(&url).json(b),
            None => self.http.get(&url),
        };
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        let resp = req.send().await.with_context(|| {
            format!("cannot reach the gateway at {} (is it running?)", self.base)
        })?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = value["error"]["message"].as_str().unwrap_or("no details");
            anyhow::bail!("the gateway answered {status}: {msg}");
        }
        Ok(value)
    }
}
