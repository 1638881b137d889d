//! The `browser` tool: a managed headless Chromium driven over the DevTools protocol.
//!
//! The model reads pages through snapshots (visible text plus numbered interactive elements,
//! `e1`, `e2`, …) and acts on them by ref. One Chromium runs per profile (the turn's user,
//! or `default`), started on first use and closed when idle.
//!
//! # Layout
//! - this file: [`BrowserTool`] (the [`Tool`]: arguments → [`Action`], one [`Browser`] per
//!   profile).
//! - [`manager`]: [`Browser`], the task owning one Chromium process and its tabs (start,
//!   restart after a crash, idle close, shutdown).
//! - `actions`: what each action does to a page; `snapshot.js` walks the DOM.
//! - `proxy`: the loopback proxy all browser traffic goes through, enforcing the host policy
//!   on every request (links, redirects and page scripts included).

mod actions;
pub mod manager;
mod proxy;

pub use manager::{find_executable, Action, Browser, BrowserOptions};

use crate::ssrf::HostPolicy;
use futures::future::BoxFuture;
use moltbot_core::config::BrowserConfig;
use moltbot_core::tool::args;
use moltbot_core::{Tool, ToolContext, ToolError, ToolOutput, ToolSpec};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use url::Url;

/// Profile used when the turn has no user.
pub const DEFAULT_PROFILE: &str = "default";

/// Profiles with a browser task at once, at most.
const MAX_PROFILES: usize = 8;

/// Longest text handed back to the model (a snapshot stays below it).
const OUTPUT_CAP: usize = 12_000;

const ACTIONS: [&str; 10] = [
    "open",
    "navigate",
    "snapshot",
    "click",
    "type",
    "scroll",
    "screenshot",
    "tabs",
    "switch_tab",
    "close_tab",
];

/// The `browser` tool.
pub struct BrowserTool {
    spec: ToolSpec,
    executable: String,
    profile_root: PathBuf,
    idle_close: Duration,
    navigation_timeout: Duration,
    policy: Arc<HostPolicy>,
    // A std lock: never held across an await.
    browsers: Mutex<HashMap<String, Browser>>,
}

impl std::fmt::Debug for BrowserTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserTool")
            .field("profile_root", &self.profile_root)
            .finish_non_exhaustive()
    }
}

impl BrowserTool {
    /// Profiles live in folders under `profile_root`. Fails when `allow_hosts` does not parse.
    /// Chromium is looked for at the first call, so a missing binary is a call error
    /// ([`find_executable`] tells it ahead).
    pub fn new(cfg: &BrowserConfig, profile_root: PathBuf) -> Result<Self, String> {
        let policy = HostPolicy::new(&cfg.allow_hosts, "tools.browser.allow_hosts")?;
        Ok(Self {
            spec: spec(),
            executable: cfg.executable.clone(),
            profile_root,
            idle_close: Duration::from_secs(cfg.idle_close_secs.max(1)),
            navigation_timeout: Duration::from_secs(cfg.navigation_timeout_secs.max(1)),
            policy: Arc::new(policy),
            browsers: Mutex::new(HashMap::new()),
        })
    }

    /// Close browsers after `idle` without a call instead of `idle_close_secs` (tests use
    /// a fraction of a second). Applies to browsers started afterwards.
    pub fn with_idle_close(mut self, idle: Duration) -> Self {
        self.idle_close = idle;
        self
    }

    /// The browser of `profile`, its task started when needed (Chromium starts on the first
    /// call that opens a page). Must be called within a Tokio runtime.
    pub fn browser(&self, profile: &str) -> Result<Browser, ToolError> {
        let mut browsers = self.browsers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = browsers.get(profile) {
            return Ok(b.clone());
        }
        if browsers.len() >= MAX_PROFILES {
            // Forget profiles whose Chromium is closed (their folders stay).
            browsers.retain(|_, b| b.is_running());
            if browsers.len() >= MAX_PROFILES {
                return Err(ToolError::Unavailable(format!(
                    "{MAX_PROFILES} browser profiles are in use; try again when one closes \
                     (after `tools.browser.idle_close_secs` without calls)"
                )));
            }
        }
        let browser = Browser::spawn(
            profile,
            BrowserOptions {
                executable: self.executable.clone(),
                user_data_dir: self.profile_root.join(profile_dir(profile)),
                idle_close: self.idle_close,
                navigation_timeout: self.navigation_timeout,
                policy: self.policy.clone(),
            },
        );
        browsers.insert(profile.to_string(), browser.clone());
        Ok(browser)
    }

    /// Close every browser and wait for their processes to exit.
    pub async fn shutdown(&self) {
        let browsers: Vec<Browser> = self
            .browsers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, b)| b)
            .collect();
        futures::future::join_all(browsers.iter().map(Browser::shutdown)).await;
    }
}

impl Tool for BrowserTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn output_cap(&self) -> usize {
        OUTPUT_CAP
    }

    fn call<'a>(
        &'a self,
        arguments: Value,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolOutput, ToolError>> {
        Box::pin(async move {
            let action = parse(&arguments)?;
            let browser = self.browser(ctx.user.as_deref().unwrap_or(DEFAULT_PROFILE))?;
            // Dropping the call (cancel or timeout) tells the browser task to stop working
            // for it.
            tokio::select! {
                _ = ctx.cancel.cancelled() => Err(ToolError::Cancelled),
                res = tokio::time::timeout(ctx.timeout, browser.run(action)) => {
                    res.unwrap_or(Err(ToolError::Timeout(ctx.timeout)))
                }
            }
        })
    }
}

fn spec() -> ToolSpec {
    ToolSpec {
        name: "browser".to_string(),
        description: "Web browser; snapshot lists element refs (e3) for click/type.".to_string(),
        parameters: json!({
            "type": "object",
            "properties": {
                "action": {"enum": ACTIONS},
                "url": {"type": "string"},
                "ref": {"type": "string"},
                "text": {"type": "string"},
                "submit": {"type": "boolean"},
                "direction": {"enum": ["up", "down"]},
                "pixels": {"type": "integer"},
                "index": {"type": "integer"},
            },
            "required": ["action"],
        }),
    }
}

/// The action the arguments ask for; errors name the field.
fn parse(arguments: &Value) -> Result<Action, ToolError> {
    let action = args::string(arguments, "action")?;
    let target = || args::string(arguments, "ref").map(|r| r.trim().to_string());
    let index = || {
        args::opt_u64(arguments, "index", 0, 99)?
            .map(|i| i as usize)
            .ok_or_else(|| {
                ToolError::InvalidArguments(format!("`index` is required for action `{action}`"))
            })
    };
    Ok(match action {
        "open" => Action::Open {
            url: parse_url(args::string(arguments, "url")?)?,
        },
        "navigate" => Action::Navigate {
            url: parse_url(args::string(arguments, "url")?)?,
        },
        "snapshot" => Action::Snapshot,
        "click" => Action::Click { target: target()? },
        "type" => Action::Type {
            target: target()?,
            text: args::opt_string(arguments, "text")?
                .ok_or_else(|| {
                    ToolError::InvalidArguments("`text` is required for action `type`".to_string())
                })?
                .to_string(),
            submit: opt_bool(arguments, "submit")?.unwrap_or(false),
        },
        "scroll" => Action::Scroll {
            down: match args::opt_string(arguments, "direction")? {
                None | Some("down") => true,
                Some("up") => false,
                Some(other) => {
                    return Err(ToolError::InvalidArguments(format!(
                        "`direction` must be `up` or `down`, got {other:?}"
                    )))
                }
            },
            pixels: args::opt_u64(arguments, "pixels", 1, 100_000)?,
        },
        "screenshot" => Action::Screenshot,
        "tabs" => Action::Tabs,
        "switch_tab" => Action::SwitchTab { index: index()? },
        "close_tab" => Action::CloseTab { index: index()? },
        other => {
            return Err(ToolError::InvalidArguments(format!(
                "`action` must be one of {}, got {other:?}",
                ACTIONS.join(", ")
            )))
        }
    })
}

/// A URL as the model wrote it; a bare host (`example.org/news`) gets `https://`.
fn parse_url(raw: &str) -> Result<Url, ToolError> {
    let raw = raw.trim();
    match Url::parse(raw) {
        Ok(url) => Ok(url),
        Err(url::ParseError::RelativeUrlWithoutBase) => Url::parse(&format!("https://{raw}"))
            .map_err(|e| ToolError::InvalidArguments(format!("`url` {raw:?} is not a URL: {e}"))),
        Err(e) => Err(ToolError::InvalidArguments(format!(
            "`url` {raw:?} is not a URL: {e}"
        ))),
    }
}

fn opt_bool(arguments: &Value, field: &str) -> Result<Option<bool>, ToolError> {
    match arguments.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ToolError::InvalidArguments(format!(
            "`{field}` must be true or false, got {other}"
        ))),
    }
}

/// The folder name of a profile: the name itself when it is plain, else a cleaned name plus
/// a hash (so `telegram:42` and `telegram_42` do not share a folder).
fn profile_dir(profile: &str) -> String {
    let plain = !profile.is_empty()
        && profile.len() <= 64
        && profile
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if plain {
        return profile.to_string();
    }
    let cleaned: String = profile
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let digest = Sha256::digest(profile.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{cleaned}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_short_and_valid() {
        let spec = spec();
        assert!(ToolSpec::valid_name(&spec.name));
        let size = serde_json::to_string(&spec).unwrap().len();
        // 473 now; without the `type`s it would be ~380, but typed fields get better calls.
        assert!(size < 480, "spec is {size} characters");
    }

    #[test]
    fn arguments_parse_into_actions() {
        let a = parse(&json!({"action": "open", "url": "example.org/x"})).unwrap();
        assert_eq!(
            a,
            Action::Open {
                url: Url::parse("https://example.org/x").unwrap()
            }
        );
        let a = parse(&json!({"action": "type", "ref": "e3", "text": "", "submit": true})).unwrap();
        assert_eq!(
            a,
            Action::Type {
                target: "e3".into(),
                text: String::new(),
                submit: true
            }
        );
        let a = parse(&json!({"action": "scroll"})).unwrap();
        assert_eq!(
            a,
            Action::Scroll {
                down: true,
                pixels: None
            }
        );
        for (args, msg) in [
            (json!({"action": "fly"}), "`action` must be one of open"),
            (json!({"action": "click"}), "`ref` is required"),
            (json!({"action": "type", "ref": "e1"}), "`text` is required"),
            (
                json!({"action": "type", "ref": "e1", "text": "x", "submit": "yes"}),
                "`submit` must be true or false, got \"yes\"",
            ),
            (
                json!({"action": "scroll", "direction": "left"}),
                "`direction` must be `up` or `down`, got \"left\"",
            ),
            (json!({"action": "switch_tab"}), "`index` is required"),
            (
                json!({"action": "open", "url": "http://"}),
                "`url` \"http://\"",
            ),
        ] {
            let err = parse(&args).unwrap_err().to_string();
            assert!(err.contains(msg), "{args}: {err}");
        }
    }

    #[test]
    fn profile_folders_are_safe_and_distinct() {
        assert_eq!(profile_dir("default"), "default");
        let a = profile_dir("telegram:42");
        let b = profile_dir("telegram_42");
        assert!(a.starts_with("telegram_42-"), "{a}");
        assert_eq!(b, "telegram_42");
        assert_ne!(a, b);
        assert!(!profile_dir("../../etc").contains('/'));
        assert!(!profile_dir("").is_empty());
    }
}
