//! `moltbot logs [--follow] [--lines N]`: the gateway service's log.
//!
//! The gateway itself logs to stderr only (no log file of its own). Under systemd that is
//! the journal (`journalctl --user -u moltbot.service`); under launchd the agent sends it
//! to `<data dir>/logs/gateway.log`. A gateway run in the foreground logs to its terminal,
//! so there is nothing to show.
//!
//! Exit codes: 0 shown, 1 no log to show (with a hint) or journalctl failed.

use super::daemon::{Manager, UNIT_NAME};
use anyhow::Context;
use clap::Args;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new lines as they come (Ctrl-C to stop).
    #[arg(long, short)]
    pub follow: bool,
    /// How many of the last lines to show.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub lines: usize,
}

pub fn run(config_path: Option<&Path>, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let manager = Manager::current();
    if manager == Manager::Systemd && manager.service_file().exists() {
        let lines = args.lines.to_string();
        let mut cmd = Command::new("journalctl");
        cmd.args(["--user", "-u", UNIT_NAME, "-n", &lines, "--no-pager"]);
        if args.follow {
            cmd.arg("-f");
        }
        let status = cmd.status().context(
            "running journalctl (is systemd's journal available?)\nhint: the unit logs to the \
             user journal: journalctl --user -u moltbot.service",
        )?;
        return Ok(if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let cfg = super::load_config(config_path)?;
    let file = cfg.data.resolved_dir().join("logs").join("gateway.log");
    if file.is_file() {
        return tail(&file, args.lines, args.follow).map(|()| ExitCode::SUCCESS);
    }
    eprintln!(
        "no gateway log: the service is not installed ({} is missing) and the gateway writes \
         no log file of its own (it logs to stderr: a foreground `moltbot gateway` shows its \
         log in its terminal)\nhint: `moltbot daemon install` runs it as a service; then \
         `moltbot logs -f` follows the journal",
        manager.service_file().display()
    );
    Ok(ExitCode::from(1))
}

/// Print the last `n` lines of `path`, then (with `follow`) what is appended, polling.
fn tail(path: &Path, n: usize, follow: bool) -> anyhow::Result<()> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let mut last = String::new();
    for l in &lines[lines.len().saturating_sub(n)..] {
        last.push_str(l);
        last.push('\n');
    }
    out!("{last}");
    if !follow {
        return Ok(());
    }
    let mut f = std::fs::File::open(path)?;
    let mut pos = f.seek(SeekFrom::End(0))?;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let len = f.metadata()?.len();
        if len < pos {
            // Truncated or rotated: start over.
            pos = 0;
        }
        f.seek(SeekFrom::Start(pos))?;
        let mut buf = Vec::new();
        pos += f.read_to_end(&mut buf)? as u64;
        out!("{}", String::from_utf8_lossy(&buf));
    }
}
