//! `[tools]`: the capability layer — the agent loop's budget and each built-in tool. The
//! tools themselves live in `moltbot-tools`.

use super::{in_range, ConfigError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsConfig {
    pub agent: AgentConfig,
    pub browser: BrowserConfig,
    pub cron: CronConfig,
    pub web_fetch: WebFetchConfig,
    pub exec: ExecConfig,
    pub memory: MemoryConfig,
    pub skills: SkillsConfig,
}

/// The tool-calling loop: model → tool calls → results → model, until a final answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Offer tools to the model at all.
    pub enabled: bool,
    /// Model calls per turn, at most (each may ask for several tools).
    pub max_steps: u32,
    /// Wall-clock budget of a whole turn's tool use, in seconds.
    pub turn_timeout_secs: u64,
    /// Budget of one tool call, in seconds.
    pub tool_timeout_secs: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_steps: 6,
            turn_timeout_secs: 180,
            tool_timeout_secs: 60,
        }
    }
}

/// A managed headless Chromium driven over the DevTools protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrowserConfig {
    pub enabled: bool,
    /// The Chromium binary; empty looks for `chromium`, `chromium-browser`, `google-chrome`
    /// on `PATH`.
    pub executable: String,
    /// Close the browser after this many seconds without a call.
    pub idle_close_secs: u64,
    /// Page load budget, in seconds.
    pub navigation_timeout_secs: u64,
    /// Hosts (or IP addresses/CIDR ranges) the browser may open even though they are
    /// private or loopback; everything public is allowed.
    pub allow_hosts: Vec<String>,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            executable: String::new(),
            idle_close_secs: 300,
            navigation_timeout_secs: 30,
            allow_hosts: Vec::new(),
        }
    }
}

/// What happens to runs that fell due while the gateway was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Run once now for all missed times, then continue on schedule.
    #[default]
    RunOnce,
    /// Drop the missed runs; the next run is the next scheduled time.
    Skip,
}

/// Scheduled jobs (`moltbot cron …` and the `cron` tool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CronConfig {
    pub enabled: bool,
    /// Time zone of jobs created without `--tz` (IANA name); empty uses UTC.
    pub default_tz: String,
    pub misfire: MisfirePolicy,
    /// Run history rows kept per job.
    pub history_per_job: u32,
    /// Jobs at most (the tool refuses more).
    pub max_jobs: u32,
}

impl Default for CronConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            default_tz: String::new(),
            misfire: MisfirePolicy::RunOnce,
            history_per_job: 50,
            max_jobs: 200,
        }
    }
}

/// `web_fetch`: GET a URL and return readable text, behind an SSRF guard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebFetchConfig {
    pub enabled: bool,
    /// Largest response body read, in bytes.
    pub max_bytes: usize,
    pub timeout_secs: u64,
    pub max_redirects: u32,
    /// Hosts, IP addresses or CIDR ranges that may be fetched although they are private,
    /// loopback or link-local (everything public is allowed).
    pub allow_hosts: Vec<String>,
}

impl Default for WebFetchConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 2 << 20,
            timeout_secs: 20,
            max_redirects: 5,
            allow_hosts: Vec::new(),
        }
    }
}

/// Who decides whether a shell command runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecPolicy {
    /// No command runs.
    #[default]
    Deny,
    /// Commands whose program is in `allow` run; others are refused.
    Allowlist,
    /// Commands in `allow` run; others wait for the owner's approval.
    Ask,
}

/// `exec`: shell commands in a workspace folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    pub policy: ExecPolicy,
    /// Program names (first word of the command) that run without asking.
    pub allow: Vec<String>,
    /// Working folder; commands cannot leave it. Empty: `<data dir>/workspace`.
    pub workspace: String,
    pub timeout_secs: u64,
    /// Output kept (stdout + stderr), in bytes.
    pub max_output_bytes: usize,
    /// How long an `ask` waits for the owner, in seconds.
    pub approval_timeout_secs: u64,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            policy: ExecPolicy::Deny,
            allow: Vec::new(),
            workspace: String::new(),
            timeout_secs: 30,
            max_output_bytes: 64 << 10,
            approval_timeout_secs: 300,
        }
    }
}

/// `memory`: remember and recall facts per user, in the knowledge index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    pub enabled: bool,
    /// Facts recalled per query.
    pub recall_results: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            recall_results: 5,
        }
    }
}

/// Skills: `<dir>/<name>/SKILL.md`, scanned at start and watched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SkillsConfig {
    pub enabled: bool,
    /// Folder of skills; empty: `~/.moltbot/skills`.
    pub dir: String,
    /// Watch the folder and apply changes without a restart.
    pub watch: bool,
}

impl Default for SkillsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: String::new(),
            watch: true,
        }
    }
}

impl ToolsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let in_range =
            |field: &str, v: u64, lo: u64, hi: u64| in_range(&format!("tools.{field}"), v, lo, hi);
        in_range("agent.max_steps", u64::from(self.agent.max_steps), 1, 64)?;
        in_range(
            "agent.turn_timeout_secs",
            self.agent.turn_timeout_secs,
            1,
            86_400,
        )?;
        in_range(
            "agent.tool_timeout_secs",
            self.agent.tool_timeout_secs,
            1,
            3_600,
        )?;
        in_range(
            "browser.idle_close_secs",
            self.browser.idle_close_secs,
            1,
            86_400,
        )?;
        in_range(
            "browser.navigation_timeout_secs",
            self.browser.navigation_timeout_secs,
            1,
            600,
        )?;
        in_range(
            "cron.history_per_job",
            u64::from(self.cron.history_per_job),
            1,
            10_000,
        )?;
        in_range("cron.max_jobs", u64::from(self.cron.max_jobs), 1, 100_000)?;
        in_range(
            "web_fetch.max_bytes",
            self.web_fetch.max_bytes as u64,
            1024,
            1 << 30,
        )?;
        in_range(
            "web_fetch.timeout_secs",
            self.web_fetch.timeout_secs,
            1,
            600,
        )?;
        in_range(
            "web_fetch.max_redirects",
            u64::from(self.web_fetch.max_redirects),
            0,
            20,
        )?;
        in_range("exec.timeout_secs", self.exec.timeout_secs, 1, 86_400)?;
        in_range(
            "exec.max_output_bytes",
            self.exec.max_output_bytes as u64,
            256,
            1 << 30,
        )?;
        in_range(
            "exec.approval_timeout_secs",
            self.exec.approval_timeout_secs,
            1,
            86_400,
        )?;
        in_range(
            "memory.recall_results",
            self.memory.recall_results as u64,
            1,
            100,
        )?;
        // `cron.default_tz` is checked where time zones are known (moltbot-tools' cron).
        Ok(())
    }
}
