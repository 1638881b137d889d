//! `exec`: run a shell command in the workspace folder, under an approval policy.
//!
//! - `deny`: nothing runs.
//! - `allowlist`: a command runs when its program is in `allow` and it is a plain command
//!   (no pipes, redirections, `;`, `&&`, substitutions). Such commands are split with shell
//!   quoting rules and started directly, without a shell, so `ls; rm -rf ~` can never pass
//!   as `ls`. Anything else is refused.
//! - `ask`: allowlisted plain commands run; anything else becomes an approval request the
//!   owner answers (`moltbot approvals approve ID`, the Control UI, the admin API); an
//!   approved command runs through `sh -c`.
//!
//! Every command runs in the workspace (a `cwd` argument must stay inside it), with an
//! environment cleared of everything but `PATH`, `HOME` (the workspace), `LANG` and `TERM`
//! (so API keys in the gateway's environment never reach it), a time limit that kills the
//! whole process group, and an output cap.

use crate::approvals::{Approvals, Decision};
use futures::future::BoxFuture;
use moltbot_core::config::{ExecConfig, ExecPolicy};
use moltbot_core::tool::args;
use moltbot_core::{Tool, ToolContext, ToolError, ToolOutput, ToolSpec};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Characters that make a command more than one plain program call.
const SHELL_OPERATORS: &[&str] = &["|", ";", "&", ">", "<", "$(", "`", "\n", "\r"];

pub struct ExecTool {
    spec: ToolSpec,
    cfg: ExecConfig,
    workspace: PathBuf,
    approvals: Approvals,
}

impl ExecTool {
    /// `workspace` is created if missing.
    pub fn new(
        cfg: &ExecConfig,
        workspace: PathBuf,
        approvals: Approvals,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&workspace)?;
        let workspace = workspace.canonicalize()?;
        Ok(Self {
            spec: ToolSpec {
                name: "exec".into(),
                description: "Run a shell command in the workspace folder and return its \
                              output and exit code."
                    .into(),
                parameters: serde_json::json!({
                    "type": "object",
                    "properties": {
                        "command": {"type": "string", "description": "e.g. ls -la"},
                        "cwd": {"type": "string", "description": "folder inside the workspace"}
                    },
                    "required": ["command"]
                }),
            },
            cfg: cfg.clone(),
            workspace,
            approvals,
        })
    }

    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// How `command` may run under the policy: directly (split words), through the shell
    /// after approval, or not at all.
    async fn authorise(&self, command: &str, ctx: &ToolContext) -> Result<Plan, ToolError> {
        let plain = !SHELL_OPERATORS.iter().any(|op| command.contains(op));
        let words = if plain {
            shell_words::split(command).ok()
        } else {
            None
        };
        let allowed = words
            .as_ref()
            .and_then(|w| w.first())
            .is_some_and(|program| {
                let base = Path::new(program)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(program);
                // A path to a program is only allowed when the path itself is listed.
                self.cfg
                    .allow
                    .iter()
                    .any(|a| a == program || (a == base && !program.contains('/')))
            });
        match (self.cfg.policy, allowed, words) {
            (ExecPolicy::Deny, _, _) => Err(ToolError::Denied(
                "running commands is switched off (`tools.exec.policy` is \"deny\")".into(),
            )),
            (_, true, Some(words)) => Ok(Plan::Direct(words)),
            (ExecPolicy::Allowlist, _, _) => Err(ToolError::Denied(format!(
                "`{command}` is not allowed: only plain calls of {} may run \
                 (`tools.exec.allow`), without pipes or redirections",
                if self.cfg.allow.is_empty() {
                    "no program".to_string()
                } else {
                    self.cfg.allow.join(", ")
                }
            ))),
            (ExecPolicy::Ask, _, _) => {
                let wait = Duration::from_secs(self.cfg.approval_timeout_secs);
                match self.approvals.ask(command, ctx, wait).await? {
                    Decision::Approved => Ok(Plan::Shell),
                    Decision::Denied => Err(ToolError::Denied(format!(
                        "the owner did not approve `{command}`"
                    ))),
                    Decision::Expired => Err(ToolError::Denied(format!(
                        "nobody approved `{command}` within {} s",
                        self.cfg.approval_timeout_secs
                    ))),
                }
            }
        }
    }

    fn working_dir(&self, cwd: Option<&str>) -> Result<PathBuf, ToolError> {
        let Some(cwd) = cwd.filter(|c| !c.is_empty()) else {
            return Ok(self.workspace.clone());
        };
        let rel = Path::new(cwd);
        let escapes = rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)));
        let dir = self.workspace.join(rel);
        let inside = !escapes
            && dir
                .canonicalize()
                .is_ok_and(|d| d.starts_with(&self.workspace));
        if inside {
            Ok(dir)
        } else {
            Err(ToolError::InvalidArguments(format!(
                "`cwd` must be an existing folder inside the workspace, got {cwd:?}"
            )))
        }
    }
}

enum Plan {
    Direct(Vec<String>),
    Shell,
}

impl Tool for ExecTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn output_cap(&self) -> usize {
        self.cfg.max_output_bytes
    }

    fn call<'a>(
        &'a self,
        arguments: serde_json::Value,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolOutput, ToolError>> {
        Box::pin(async move {
            let command = args::string(&arguments, "command")?.trim().to_string();
            let dir = self.working_dir(args::opt_string(&arguments, "cwd")?)?;
            let plan = self.authorise(&command, ctx).await?;
            let mut cmd = match plan {
                Plan::Direct(words) => {
                    let mut c = Command::new(&words[0]);
                    c.args(&words[1..]);
                    c
                }
                Plan::Shell => {
                    let mut c = Command::new("sh");
                    c.arg("-c").arg(&command);
                    c
                }
            };
            cmd.current_dir(&dir)
                .env_clear()
                .env(
                    "PATH",
                    std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into()),
                )
                .env("HOME", &self.workspace)
                .env("LANG", "C.UTF-8")
                .env("TERM", "dumb")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            let timeout = Duration::from_secs(self.cfg.timeout_secs).min(ctx.timeout);
            let started = std::time::Instant::now();
            let mut child = cmd
                .spawn()
                .map_err(|e| ToolError::Failed(format!("cannot start `{command}`: {e}")))?;
            let pid = child.id();
            let cap = self.cfg.max_output_bytes;
            let stdout = child.stdout.take();
            let stderr = child.stderr.take();
            let run = async {
                let (out, err, status) = tokio::join!(
                    read_capped(stdout, cap),
                    read_capped(stderr, cap),
                    child.wait()
                );
                (out, err, status)
            };
            let result = tokio::select! {
                r = tokio::time::timeout(timeout, run) => r.map_err(|_| ToolError::Timeout(timeout)),
                () = ctx.cancel.cancelled() => Err(ToolError::Cancelled),
            };
            let (out, err, status) = match result {
                Ok(r) => r,
                Err(e) => {
                    // The child is killed on drop; its own children share its group.
                    kill_group(pid).await;
                    metrics::counter!("moltbot_tool_exec_total", "result" => e.kind()).increment(1);
                    return Err(e);
                }
            };
            let status = status.map_err(|e| ToolError::Failed(format!("`{command}`: {e}")))?;
            let code = status
                .code()
                .map_or("killed by a signal".to_string(), |c| c.to_string());
            metrics::counter!("moltbot_tool_exec_total", "result" => "ok").increment(1);
            tracing::info!(command = %command, exit = %code, ms = started.elapsed().as_millis() as u64, "exec ran");
            let mut text = format!("exit code: {code}\n");
            for (name, (bytes, total)) in [("stdout", out), ("stderr", err)] {
                if total == 0 {
                    continue;
                }
                text.push_str(&format!(
                    "--- {name} ---\n{}",
                    String::from_utf8_lossy(&bytes)
                ));
                if total > bytes.len() {
                    text.push_str(&format!(
                        "\n[{name} cut at {} of {total} bytes]",
                        bytes.len()
                    ));
                }
                if !text.ends_with('\n') {
                    text.push('\n');
                }
            }
            Ok(ToolOutput::text(text))
        })
    }
}

const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Read a pipe to its end, keeping the first `cap` bytes; returns them and the total size.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> (Vec<u8>, usize) {
    let Some(mut pipe) = pipe else {
        return (Vec::new(), 0);
    };
    let mut kept = Vec::new();
    let mut total = 0;
    let mut buf = [0u8; 8192];
    // Keep reading past the cap so the child never blocks on a full pipe.
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        total += n;
    }
    (kept, total)
}

/// Kill the process group a timed-out or cancelled command started (children included).
/// `kill(1)` instead of a libc call keeps this crate free of `unsafe`.
async fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{pid}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}
