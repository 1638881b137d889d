//! The `cron` tool: the assistant sets reminders and recurring tasks for the person it
//! talks to. Jobs deliver to the chat the turn came from (or its session), and a user sees
//! and removes only their own jobs.

use super::handle::shorten;
use super::natural;
use super::{format_local_ms, parse_tz, CronError, CronHandle, NewJob, Schedule};
use futures::future::BoxFuture;
use moltbot_core::tool::args;
use moltbot_core::{Tool, ToolContext, ToolError, ToolOutput, ToolSpec};
use moltbot_store::{CronJob, CronPayload, CronTarget};
use serde_json::{json, Value};

/// Jobs listed by `action=list`, at most.
const LIST_MAX: usize = 50;

pub struct CronTool {
    handle: CronHandle,
    spec: ToolSpec,
}

impl std::fmt::Debug for CronTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronTool").finish_non_exhaustive()
    }
}

impl CronTool {
    pub fn new(handle: CronHandle) -> Self {
        // Every character here goes into model prompts: keep it short.
        let spec = ToolSpec {
            name: "cron".into(),
            description: "Set reminders and recurring tasks; list or remove them.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "action": {"type": "string", "enum": ["add", "list", "remove"]},
                    "message": {"type": "string", "description": "Reminder text"},
                    "cron": {"type": "string", "description": "e.g. 0 9 * * 1-5"},
                    "every": {"type": "string", "description": "e.g. 10m, 2h, 1d"},
                    "at": {"type": "string", "description": "Once: 2026-12-01T09:00"},
                    "tz": {"type": "string"},
                    "prompt": {"type": "string"},
                    "when": {"type": "string", "description": "e.g. tomorrow 9am"},
                    "id": {"type": "string"}
                },
                "required": ["action"]
            }),
        };
        Self { handle, spec }
    }

    async fn add(&self, a: &Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let nonempty = |field: &str| -> Result<Option<&str>, ToolError> {
            Ok(args::opt_string(a, field)?.filter(|s| !s.trim().is_empty()))
        };
        let tz = match nonempty("tz")? {
            Some(name) => parse_tz(name).map_err(invalid)?,
            None => self.handle.default_tz(),
        };
        let given: Vec<(&str, &str)> = ["cron", "every", "at"]
            .into_iter()
            .filter_map(|f| nonempty(f).transpose().map(|v| v.map(|v| (f, v))))
            .collect::<Result<_, _>>()?;
        // Without a formal schedule, or with one that does not parse (small models write
        // "0 9 every day" or a date in the past), read it from `when` or the user's own
        // words ("remind me tomorrow at 9 to call Anna"); what is left of those words is
        // the reminder.
        let now = self.handle.now().with_timezone(&tz);
        let mut understood_rest = None;
        let mut from_words = || -> Result<Option<Result<Schedule, _>>, ToolError> {
            // The user's own words first: they are what the user meant; a model's `when`
            // is a paraphrase that small models get wrong.
            let when = nonempty("when")?;
            let understood = ctx
                .request
                .as_deref()
                .and_then(|r| natural::understand(r, now))
                .inspect(|u| understood_rest = Some(u.rest.clone()))
                .or_else(|| when.and_then(|w| natural::understand(w, now)));
            Ok(understood.map(|u| match u.when {
                natural::When::Cron(c) => Schedule::cron(&c, tz),
                natural::When::Every(e) => Schedule::every(&e),
                natural::When::At(a) => Schedule::at(&a, tz),
            }))
        };
        let formal = match given.as_slice() {
            [("cron", v)] => Some(Schedule::cron(v, tz)),
            [("every", v)] => Some(Schedule::every(v)),
            [(_, v)] => Some(Schedule::at(v, tz)),
            [] => None,
            many => {
                let names: Vec<String> = many.iter().map(|(f, _)| format!("`{f}`")).collect();
                return Err(ToolError::InvalidArguments(format!(
                    "give only one of `cron`, `every` or `at`, got {}",
                    names.join(" and ")
                )));
            }
        };
        let schedule = match formal {
            Some(Ok(s)) => Ok(s),
            Some(Err(bad)) => match from_words()? {
                Some(Ok(s)) => Ok(s),
                _ => Err(bad),
            },
            None => from_words()?.ok_or_else(|| {
                ToolError::InvalidArguments(
                    "give one of `cron`, `every`, `at` or `when`, got none".into(),
                )
            })?,
        }
        .map_err(invalid)?;
        // A schedule read from the user's words also gives the reminder text when the
        // model wrote none.
        // The reminder text: the model's, else what the user's words leave once the
        // schedule and "remind me to" are taken out.
        let from_request = understood_rest.or_else(|| {
            ctx.request
                .as_deref()
                .and_then(|r| natural::understand(r, now))
                .map(|u| u.rest)
        });
        let from_request = from_request.filter(|r| !r.is_empty());
        // A model's message that shares no word with what the user said is made up; the
        // user's words are kept instead.
        let message = match (nonempty("message")?, from_request.as_deref()) {
            (Some(m), Some(said)) if !shares_a_word(m, ctx.request.as_deref().unwrap_or(said)) => {
                Some(said)
            }
            (Some(m), _) => Some(m),
            (None, said) => said,
        };
        let payload = match (nonempty("prompt")?, message) {
            (Some(p), _) => CronPayload::Prompt { text: p.into() },
            (None, Some(m)) => CronPayload::Message { text: m.into() },
            (None, None) => {
                return Err(ToolError::InvalidArguments(
                    "`message` is required (or `prompt`)".into(),
                ))
            }
        };
        let target = match &ctx.origin {
            Some(o) => CronTarget::Chat {
                channel: o.channel.clone(),
                chat_id: o.chat_id.clone(),
            },
            None => CronTarget::Session {
                id: ctx.session_id.clone(),
            },
        };
        let job = self
            .handle
            .add(NewJob {
                name: message.map(|m| shorten(m, 60)).unwrap_or_default(),
                schedule: schedule.clone(),
                tz,
                payload,
                target,
                owner: ctx.user.clone(),
                misfire: None,
            })
            .await
            .map_err(from_cron)?;
        Ok(ToolOutput::text(format!(
            "Scheduled job {} ({}); next run {}.",
            job.id,
            schedule.describe(tz),
            next_run(&job)
        )))
    }

    async fn list(&self, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let jobs: Vec<CronJob> = self
            .handle
            .list()
            .await
            .map_err(from_cron)?
            .into_iter()
            .filter(|j| j.owner == ctx.user)
            .collect();
        if jobs.is_empty() {
            return Ok(ToolOutput::text("No scheduled jobs."));
        }
        let mut out = String::new();
        for j in jobs.iter().take(LIST_MAX) {
            let state = if j.enabled { "" } else { " (paused)" };
            out.push_str(&format!(
                "{} \"{}\" {}{state}; next {}\n",
                j.id,
                j.name,
                describe(j),
                next_run(j)
            ));
        }
        if jobs.len() > LIST_MAX {
            out.push_str(&format!("… and {} more\n", jobs.len() - LIST_MAX));
        }
        Ok(ToolOutput::text(out.trim_end()))
    }

    async fn remove(&self, a: &Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let id = args::string(a, "id")?.trim();
        let job = self.handle.get(id).await.map_err(from_cron)?;
        let Some(job) = job.filter(|j| j.owner == ctx.user) else {
            return Err(ToolError::InvalidArguments(format!(
                "`id` {id:?} is not one of your jobs\nhint: action=list shows them"
            )));
        };
        self.handle.remove(&job.id).await.map_err(from_cron)?;
        Ok(ToolOutput::text(format!(
            "Removed job {} \"{}\".",
            job.id, job.name
        )))
    }
}

/// `cron 0 9 * * 1-5 (Europe/Berlin)`, `every 10m`, or the stored text if it does not parse.
fn describe(job: &CronJob) -> String {
    let tz = parse_tz(&job.tz).unwrap_or(chrono_tz::UTC);
    Schedule::from_stored(&job.schedule_kind, &job.schedule_expr, &job.tz)
        .map(|s| s.describe(tz))
        .unwrap_or_else(|_| format!("{} {}", job.schedule_kind, job.schedule_expr))
}

/// The next run in the job's zone, or `none`.
fn next_run(job: &CronJob) -> String {
    let tz = parse_tz(&job.tz).unwrap_or(chrono_tz::UTC);
    job.next_run_ms
        .filter(|_| job.enabled)
        .map(|ms| format_local_ms(ms, tz))
        .unwrap_or_else(|| "none".into())
}

fn invalid(e: super::ScheduleError) -> ToolError {
    ToolError::InvalidArguments(e.message)
}

fn from_cron(e: CronError) -> ToolError {
    match e {
        CronError::Schedule(e) => ToolError::InvalidArguments(e.message),
        CronError::Invalid(m) => ToolError::InvalidArguments(m),
        e @ CronError::Full { .. } => ToolError::Denied(e.to_string()),
        CronError::Store(e) => ToolError::Failed(e.to_string()),
    }
}

/// Whether two texts share a word of four letters or more (case-insensitive).
fn shares_a_word(a: &str, b: &str) -> bool {
    let words = |t: &str| -> Vec<String> {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 4)
            .map(str::to_lowercase)
            .collect()
    };
    let b = words(b);
    words(a).iter().any(|w| b.contains(w))
}

impl Tool for CronTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(
        &'a self,
        arguments: Value,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolOutput, ToolError>> {
        Box::pin(async move {
            let work = async {
                match args::string(&arguments, "action")? {
                    "add" => self.add(&arguments, ctx).await,
                    "list" => self.list(ctx).await,
                    "remove" => self.remove(&arguments, ctx).await,
                    other => Err(ToolError::InvalidArguments(format!(
                        "`action` must be add, list or remove, got {other:?}"
                    ))),
                }
            };
            tokio::select! {
                r = work => r,
                _ = ctx.cancel.cancelled() => Err(ToolError::Cancelled),
            }
        })
    }
}
