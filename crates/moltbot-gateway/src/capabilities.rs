//! The capability layer as the gateway runs it: the tool registry with the built-in tools
//! configured in `[tools]`, the pending approvals, the cron scheduler (its jobs run through
//! the engine) and the hook that puts the registry into the engine's agent loop.

use futures::future::BoxFuture;
use moltbot_core::config::{Config, ExecPolicy};
use moltbot_core::{Origin, Supervisor, Tool, ToolContext};
use moltbot_engine::{Engine, Overrides, Toolbox, TurnRequest};
use moltbot_store::{CronJob, CronPayload, CronTarget};
use moltbot_tools::approvals::Approvals;
use moltbot_tools::browser::BrowserTool;
use moltbot_tools::cron::{CronHandle, CronTool, JobRunner, Scheduler};
use moltbot_tools::exec::ExecTool;
use moltbot_tools::memory::MemoryTool;
use moltbot_tools::skills::Skills;
use moltbot_tools::web_fetch::WebFetchTool;
use moltbot_tools::{Capability, CapabilityKind, CapabilityStatus, Registry};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Words that make a turn relevant to each built-in tool (besides its description).
const WEB_FETCH_TRIGGERS: &[&str] = &[
    "url", "fetch", "website", "webpage", "link", "download", "http", "https",
];
const BROWSER_TRIGGERS: &[&str] = &[
    "url",
    "browser",
    "open",
    "page",
    "website",
    "click",
    "screenshot",
    "navigate",
    "tab",
    "summarise",
    "summarize",
];
const CRON_TRIGGERS: &[&str] = &[
    "remind",
    "reminder",
    "reminders",
    "every",
    "daily",
    "weekly",
    "tomorrow",
    "schedule",
    "scheduled",
    "cron",
    "alarm",
    "weekday",
    "weekdays",
    "morning",
    "evening",
];
const EXEC_TRIGGERS: &[&str] = &[
    "run",
    "command",
    "shell",
    "execute",
    "terminal",
    "script",
    "ls",
    "git",
    "df",
    "uptime",
    "file",
    "folder",
    "directory",
    "disk",
    "workspace",
];
const MEMORY_TRIGGERS: &[&str] = &[
    "remember",
    "recall",
    "forget",
    "my name",
    "what is my",
    "what's my",
    "note that",
];

/// The running capability layer.
pub struct Capabilities {
    pub registry: Arc<Registry>,
    pub approvals: Approvals,
    pub cron: Option<CronHandle>,
    browser: Option<Arc<BrowserTool>>,
    pub skills: Option<Skills>,
    skills_dir: std::path::PathBuf,
    watch_skills: bool,
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capabilities")
            .field("registry", &self.registry)
            .finish()
    }
}

impl Capabilities {
    /// Build the built-in tools from config and hand the registry to the engine. A tool
    /// that cannot start is listed with the reason and the others still load.
    pub fn build(cfg: &Config, engine: &Engine) -> Arc<Capabilities> {
        let data_dir = cfg.data.resolved_dir();
        let tools = &cfg.tools;
        let registry = Arc::new(Registry::new());
        let approvals = Approvals::new();
        let problem = |name: &str, status: CapabilityStatus, reason: String| {
            registry.note(Capability {
                name: name.to_string(),
                kind: CapabilityKind::Tool,
                status,
                description: String::new(),
                source: "builtin".into(),
                reason: Some(reason),
                tools: Vec::new(),
            });
        };
        let off = |name: &str, key: &str| {
            problem(
                name,
                CapabilityStatus::Disabled,
                format!("switched off (`tools.{key}`)"),
            );
        };

        if tools.web_fetch.enabled {
            match WebFetchTool::new(&tools.web_fetch) {
                Ok(t) => registry.add(Arc::new(t), "builtin", WEB_FETCH_TRIGGERS),
                Err(e) => problem("web_fetch", CapabilityStatus::Error, e),
            }
        } else {
            off("web_fetch", "web_fetch.enabled");
        }

        let mut browser = None;
        if tools.browser.enabled {
            match BrowserTool::new(&tools.browser, data_dir.join("browser")) {
                Ok(t) => {
                    let t = Arc::new(t);
                    browser = Some(t.clone());
                    registry.add(t, "builtin", BROWSER_TRIGGERS);
                }
                Err(e) => problem("browser", CapabilityStatus::Error, e),
            }
        } else {
            off("browser", "browser.enabled");
        }

        let mut cron = None;
        if tools.cron.enabled {
            match CronHandle::new(engine.store().clone(), &tools.cron) {
                Ok(handle) => {
                    registry.add(
                        Arc::new(CronTool::new(handle.clone())),
                        "builtin",
                        CRON_TRIGGERS,
                    );
                    cron = Some(handle);
                }
                Err(e) => problem("cron", CapabilityStatus::Error, e.to_string()),
            }
        } else {
            off("cron", "cron.enabled");
        }

        if tools.exec.policy == ExecPolicy::Deny {
            off("exec", "exec.policy = \"deny\"");
        } else {
            let workspace = if tools.exec.workspace.is_empty() {
                data_dir.join("workspace")
            } else {
                moltbot_core::config::expand_home(Path::new(&tools.exec.workspace))
            };
            match ExecTool::new(&tools.exec, workspace, approvals.clone()) {
                Ok(t) => registry.add(Arc::new(t), "builtin", EXEC_TRIGGERS),
                Err(e) => problem(
                    "exec",
                    CapabilityStatus::Error,
                    format!("cannot prepare the workspace: {e}"),
                ),
            }
        }

        if !tools.memory.enabled {
            off("memory", "memory.enabled");
        } else {
            // Added once the encoder has loaded (see `add_memory`).
            problem(
                "memory",
                CapabilityStatus::Error,
                "waiting for the sentence encoder to load".into(),
            );
        }

        let skills = tools.skills.enabled.then(|| {
            let skills = Skills::new();
            let dir = moltbot_tools::skills::resolve_dir(&tools.skills.dir, &data_dir);
            match skills.load(&dir, &registry) {
                Ok(report) => tracing::info!(
                    loaded = report.loaded.len(),
                    broken = report.errors.len(),
                    dir = %dir.display(),
                    "skills scanned"
                ),
                Err(e) => tracing::info!(cause = %e, "no skills loaded"),
            }
            skills
        });
        engine.set_toolbox(Arc::new(Toolbox {
            registry: registry.clone(),
            cfg: tools.agent.clone(),
            skills: skills.clone(),
        }));
        Arc::new(Capabilities {
            registry,
            approvals,
            cron,
            browser,
            skills,
            skills_dir: moltbot_tools::skills::resolve_dir(&tools.skills.dir, &data_dir),
            watch_skills: tools.skills.watch,
        })
    }

    /// Load the memory tool on its own knowledge index (`<data dir>/memory`).
    pub fn add_memory(&self, index: Arc<moltbot_knowledge::Knowledge>, recall_results: usize) {
        self.registry.add(
            Arc::new(MemoryTool::new(index, recall_results)),
            "builtin",
            MEMORY_TRIGGERS,
        );
    }

    /// Run the cron scheduler (component `cron.scheduler` of `supervisor`) until
    /// `shutdown`; jobs go through `engine`.
    pub fn start_scheduler(
        &self,
        engine: Engine,
        supervisor: &Supervisor,
        shutdown: CancellationToken,
    ) {
        let Some(handle) = self.cron.clone() else {
            return;
        };
        let runner = Arc::new(EngineRunner {
            engine,
            registry: self.registry.clone(),
        });
        let stop = shutdown.clone();
        supervisor.spawn("cron.scheduler", shutdown, move || {
            let scheduler = Scheduler::new(handle.clone(), runner.clone());
            let stop = stop.clone();
            async move {
                scheduler.run(stop).await;
                Ok(())
            }
        });
    }

    /// Watch the skills folder and apply changes until `shutdown` (needs a runtime).
    pub fn watch_skills(&self, shutdown: CancellationToken) {
        let Some(skills) = self.skills.clone().filter(|_| self.watch_skills) else {
            return;
        };
        if let Err(e) = skills.watch(&self.skills_dir, self.registry.clone(), shutdown) {
            tracing::info!(cause = %e, "not watching the skills folder");
        }
    }

    /// Tell owners about approval requests in their chats and take `/approve ID` and
    /// `/deny ID` there: the request goes to the chat it came from and to the channel's
    /// owners (`allow_from`, whose direct chat ids are their sender ids).
    pub fn connect_channels(
        &self,
        hub: &moltbot_channels::ChannelHub,
        supervisor: &Supervisor,
        shutdown: CancellationToken,
    ) {
        hub.set_commands(Arc::new(ApprovalCommands {
            approvals: self.approvals.clone(),
        }));
        let approvals = self.approvals.clone();
        let hub = hub.clone();
        let stop = shutdown.clone();
        supervisor.spawn("approvals.notify", shutdown, move || {
            let mut requests = approvals.subscribe();
            let hub = hub.clone();
            let shutdown = stop.clone();
            async move {
                notify_approvals(&mut requests, &hub, &shutdown).await;
                Ok(())
            }
        });
    }

    /// Close the browser (kills Chromium).
    pub async fn shutdown(&self) {
        if let Some(b) = &self.browser {
            b.shutdown().await;
        }
    }
}

/// Send each approval request to the chat it came from and to the channel's owners, until
/// `shutdown`.
async fn notify_approvals(
    requests: &mut tokio::sync::broadcast::Receiver<moltbot_tools::approvals::ApprovalRequest>,
    hub: &moltbot_channels::ChannelHub,
    shutdown: &CancellationToken,
) {
    loop {
        let request = tokio::select! {
            r = requests.recv() => r,
            () = shutdown.cancelled() => return,
        };
        let request = match request {
            Ok(r) => r,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(origin) = &request.origin else {
            continue;
        };
        let wait = request.expires_ms.saturating_sub(request.created_ms) / 1000;
        let text = format!(
            "Approval needed: run `{}`?\nReply /approve {} or /deny {} (within {wait} s).",
            request.command, request.id, request.id
        );
        let mut chats = vec![origin.chat_id.clone()];
        for owner in hub.owners(&origin.channel) {
            if !chats.contains(&owner) {
                chats.push(owner);
            }
        }
        for chat in chats {
            if let Err(e) = hub.send_text(&origin.channel, &chat, &text).await {
                tracing::warn!(cause = %e, channel = %origin.channel, "cannot send an approval request");
            }
        }
    }
}

/// `/approve ID` and `/deny ID` from a channel's owner.
struct ApprovalCommands {
    approvals: Approvals,
}

impl moltbot_core::ChatCommands for ApprovalCommands {
    fn claims(&self, text: &str) -> bool {
        matches!(text.split_whitespace().next(), Some("/approve" | "/deny"))
    }

    fn handle(&self, channel: &str, sender_id: &str, owner: bool, text: &str) -> Option<String> {
        let mut words = text.split_whitespace();
        let approve = match words.next()? {
            "/approve" => true,
            "/deny" => false,
            _ => return None,
        };
        let Some(id) = words.next() else {
            return Some(format!(
                "Usage: /{} ID (pending: {})",
                if approve { "approve" } else { "deny" },
                self.approvals.list().len()
            ));
        };
        if !owner {
            tracing::warn!(
                channel,
                sender = sender_id,
                "approval answer from a non-owner refused"
            );
            return Some("Only the owner (a sender in allow_from) can answer approvals.".into());
        }
        Some(if self.approvals.decide(id, approve) {
            format!("{} {id}.", if approve { "Approved" } else { "Denied" })
        } else {
            format!("No pending approval {id} (answered, expired or unknown).")
        })
    }
}

/// Runs scheduled jobs with the dialogue engine (prompts) and the registry (tools).
struct EngineRunner {
    engine: Engine,
    registry: Arc<Registry>,
}

/// Budget of one scheduled prompt or tool run.
const JOB_TIMEOUT: Duration = Duration::from_secs(300);

impl JobRunner for EngineRunner {
    fn run<'a>(
        &'a self,
        job: &'a CronJob,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let origin = match &job.target {
                CronTarget::Chat { channel, chat_id } => Some(Origin {
                    channel: channel.clone(),
                    chat_id: chat_id.clone(),
                }),
                CronTarget::Session { .. } => None,
            };
            match &job.payload {
                CronPayload::Message { text } => Ok(text.clone()),
                CronPayload::Prompt { text } => {
                    // Each job has its own conversation, so a daily prompt sees its
                    // earlier runs.
                    let req = TurnRequest {
                        turn_id: None,
                        session_id: format!("cron-{}", job.id),
                        run_id: None,
                        user: job.owner.clone(),
                        message: text.clone(),
                        channel: "cron",
                        origin,
                        overrides: Overrides::default(),
                    };
                    self.engine
                        .turn(req, None, cancel)
                        .await
                        .map(|out| out.reply)
                        .map_err(|e| e.to_string())
                }
                CronPayload::Tool { name, args } => {
                    let tool: Arc<dyn Tool> = self
                        .registry
                        .get(name)
                        .ok_or_else(|| format!("no tool named `{name}` is loaded"))?;
                    let arguments: serde_json::Value = serde_json::from_str(args)
                        .map_err(|e| format!("the job's tool arguments are not JSON: {e}"))?;
                    let ctx = ToolContext {
                        session_id: format!("cron-{}", job.id),
                        user: job.owner.clone(),
                        origin,
                        request: None,
                        cancel,
                        timeout: JOB_TIMEOUT,
                    };
                    let out = tokio::time::timeout(JOB_TIMEOUT, tool.call(arguments, &ctx))
                        .await
                        .map_err(|_| format!("the tool did not finish within {JOB_TIMEOUT:?}"))?
                        .map_err(|e| e.to_string())?;
                    Ok(out.cap(tool.output_cap()).0.text)
                }
            }
        })
    }

    fn deliver_to_session<'a>(
        &'a self,
        session_id: &'a str,
        _job: &'a CronJob,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.engine
                .post(session_id, "cron", text)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
