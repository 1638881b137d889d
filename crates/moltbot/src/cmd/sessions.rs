//! `moltbot sessions list|show`: read the store directly (works with the gateway running,
//! thanks to WAL or PostgreSQL, or stopped).

use crate::cli::SessionsCommand;
use std::path::Path;
use std::process::ExitCode;

pub fn run(config_path: Option<&Path>, command: SessionsCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config_path)?;
    if cfg.data.database_url.is_none() {
        let db = cfg.data.resolved_dir().join("moltbot.db");
        anyhow::ensure!(db.exists(), "no session store at {} yet", db.display());
    }
    let rt = super::small_runtime()?;
    let store = super::open_store(&cfg, &rt)?;
    rt.block_on(async {
        match command {
            SessionsCommand::List { limit, json } => {
                let (rows, total) = store.list_sessions(limit, 0).await?;
                if json {
                    outln!("{}", serde_json::json!({"sessions": rows, "total": total}));
                } else {
                    for r in &rows {
                        outln!(
                            "{:<40} {:>5} msgs  {:<8} {}",
                            r.id,
                            r.message_count,
                            r.channel,
                            r.title.as_deref().unwrap_or("")
                        );
                    }
                    eprintln!("{} of {total} sessions", rows.len());
                }
            }
            SessionsCommand::Show { id, limit, json } => {
                let Some(row) = store.session(&id).await? else {
                    anyhow::bail!("no session with id {id:?}");
                };
                let msgs = store.recent_messages(&id, limit).await?;
                if json {
                    outln!("{}", serde_json::json!({"session": row, "messages": msgs}));
                } else {
                    for m in msgs {
                        outln!("[{}] {}", m.role.as_str(), m.content);
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
