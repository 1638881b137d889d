//! `moltbot cron add|list|rm|run|runs|enable|disable`: reads and writes the store
//! directly, so it works whether or not the gateway runs. A running gateway re-reads the
//! jobs every few seconds: new jobs and `run` requests start without a restart.
//!
//! Data goes to stdout (the new job's id, lists, JSON), notes to stderr. Exit codes: 0
//! success, 1 failure (bad schedule, unknown job), 2 bad usage.

use crate::cli::{CronAddArgs, CronCommand};
use moltbot_tools::cron::{
    format_local_ms, parse_tz, CronHandle, CronJob, CronPayload, CronRun, CronTarget, NewJob,
    Schedule, Tz,
};
use std::path::Path;
use std::process::ExitCode;

const CHANNELS: [&str; 4] = ["telegram", "whatsapp", "discord", "slack"];

pub fn run(config_path: Option<&Path>, command: CronCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config_path)?;
    let rt = super::small_runtime()?;
    let store = super::open_store(&cfg, &rt)?;
    let handle = CronHandle::new(store, &cfg.tools.cron)?;
    rt.block_on(async {
        match command {
            CronCommand::Add(args) => add(&handle, *args).await,
            CronCommand::List { json } => {
                let jobs = handle.list().await?;
                if json {
                    outln!("{}", serde_json::to_string_pretty(&jobs)?);
                } else if jobs.is_empty() {
                    eprintln!("no scheduled jobs (add one with `moltbot cron add`)");
                } else {
                    for job in &jobs {
                        outln!("{}", job_line(job));
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            CronCommand::Rm { id } => {
                if handle.remove(&id).await? {
                    eprintln!("removed {id}");
                    Ok(ExitCode::SUCCESS)
                } else {
                    not_found(&id)
                }
            }
            CronCommand::Run { id } => {
                if !handle.run_now(&id).await? {
                    return not_found(&id);
                }
                eprintln!(
                    "{id} will run within a few seconds if the gateway is running, else when it \
                     starts\nhint: `moltbot cron runs {id}` shows the result"
                );
                Ok(ExitCode::SUCCESS)
            }
            CronCommand::Runs { id, limit, json } => {
                let Some(job) = handle.get(&id).await? else {
                    return not_found(&id);
                };
                let runs = handle.runs(&id, limit).await?;
                if json {
                    outln!("{}", serde_json::to_string_pretty(&runs)?);
                } else if runs.is_empty() {
                    eprintln!("{id} has not run yet");
                } else {
                    let tz = job_tz(&job);
                    for r in &runs {
                        outln!("{}", run_line(r, tz));
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            CronCommand::Enable { id } => set_enabled(&handle, &id, true).await,
            CronCommand::Disable { id } => set_enabled(&handle, &id, false).await,
        }
    })
}

async fn add(handle: &CronHandle, a: CronAddArgs) -> anyhow::Result<ExitCode> {
    let tz = match &a.tz {
        Some(name) => parse_tz(name)?,
        None => handle.default_tz(),
    };
    // clap makes exactly one of each group present.
    let schedule = match (&a.cron, &a.every, &a.at) {
        (Some(expr), _, _) => Schedule::cron(expr, tz)?,
        (_, Some(every), _) => Schedule::every(every)?,
        (_, _, Some(at)) => Schedule::at(at, tz)?,
        _ => anyhow::bail!("give one of --cron, --every or --at"),
    };
    let payload = match (a.message, a.prompt) {
        (_, Some(text)) => CronPayload::Prompt { text },
        (Some(text), None) => CronPayload::Message { text },
        (None, None) => anyhow::bail!("give --message or --prompt"),
    };
    let target = match (a.channel, a.to, a.session) {
        (Some(channel), Some(chat_id), None) => {
            anyhow::ensure!(
                CHANNELS.contains(&channel.as_str()),
                "--channel must be one of {}, got {channel:?}",
                CHANNELS.join(", ")
            );
            CronTarget::Chat { channel, chat_id }
        }
        (None, None, Some(id)) => CronTarget::Session { id },
        _ => anyhow::bail!("give --channel with --to, or --session"),
    };
    let job = handle
        .add(NewJob {
            name: a.name.unwrap_or_default(),
            schedule: schedule.clone(),
            tz,
            payload,
            target,
            owner: Some("cli".into()),
            misfire: a.misfire,
        })
        .await?;
    outln!("{}", job.id);
    eprintln!(
        "added \"{}\": {}, next run {}\n\
         a running gateway picks it up within a few seconds",
        job.name,
        schedule.describe(tz),
        next_run(&job)
    );
    Ok(ExitCode::SUCCESS)
}

async fn set_enabled(handle: &CronHandle, id: &str, enabled: bool) -> anyhow::Result<ExitCode> {
    if !handle.set_enabled(id, enabled).await? {
        return not_found(id);
    }
    match handle.get(id).await? {
        Some(job) if enabled => eprintln!("resumed {id}, next run {}", next_run(&job)),
        _ => eprintln!("paused {id}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn not_found(id: &str) -> anyhow::Result<ExitCode> {
    eprintln!("no job {id:?}\nhint: `moltbot cron list` shows the jobs");
    Ok(ExitCode::FAILURE)
}

fn job_tz(job: &CronJob) -> Tz {
    parse_tz(&job.tz).unwrap_or(Tz::UTC)
}

fn next_run(job: &CronJob) -> String {
    match job.next_run_ms.filter(|_| job.enabled) {
        Some(ms) => format_local_ms(ms, job_tz(job)),
        None if job.enabled => "none".into(),
        None => "paused".into(),
    }
}

/// `1a2b3c4d  next Mon 2026-01-05 09:00 CET  cron 0 9 * * 1-5 (Europe/Berlin)  message → telegram:42  "standup"`
fn job_line(job: &CronJob) -> String {
    let tz = job_tz(job);
    let schedule = Schedule::from_stored(&job.schedule_kind, &job.schedule_expr, &job.tz)
        .map(|s| s.describe(tz))
        .unwrap_or_else(|e| format!("{} {} (invalid: {e})", job.schedule_kind, job.schedule_expr));
    let target = match &job.target {
        CronTarget::Chat { channel, chat_id } => format!("{channel}:{chat_id}"),
        CronTarget::Session { id } => format!("session {id}"),
    };
    let last = match (job.last_run_ms, job.last_status) {
        (Some(ms), Some(status)) => {
            format!("  last {} {}", format_local_ms(ms, tz), status.as_str())
        }
        _ => String::new(),
    };
    let state = match (job.enabled, job.next_run_ms) {
        (true, Some(ms)) => format!("next {}", format_local_ms(ms, tz)),
        (false, None) if job.schedule_kind == "at" => "done".into(),
        (false, _) => "paused".into(),
        (true, None) => "not scheduled".into(),
    };
    format!(
        "{}  {state:<31}  {}  {} → {target}  \"{}\"{last}",
        job.id,
        schedule,
        job.payload.kind(),
        job.name
    )
}

/// `Mon 2026-01-05 09:00 CET  ok  scheduled  1.2s  first line of the output`
fn run_line(r: &CronRun, tz: Tz) -> String {
    let secs = (r.finished_ms - r.started_ms).max(0) as f64 / 1000.0;
    let output = r
        .output
        .as_deref()
        .and_then(|o| o.lines().next())
        .unwrap_or("");
    let output: String = output.chars().take(80).collect();
    format!(
        "{}  {:<7}  {:<9}  {secs:.1}s  {output}",
        format_local_ms(r.started_ms, tz),
        r.status.as_str(),
        r.trigger.as_str(),
    )
}
