//! `moltbot pairing list|approve|allow|revoke`: reads and writes the store directly, so it
//! works whether or not the gateway runs. A running gateway sees approvals at the next
//! message and delivers the "you're approved" notice from the outbox within seconds.

use crate::cli::PairingCommand;
use moltbot_channels::pairing::{APPROVED_MESSAGE, CODE_LEN};
use moltbot_store::NewOutbox;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const CHANNELS: [&str; 4] = ["telegram", "whatsapp", "discord", "slack"];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn check_channel(channel: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        CHANNELS.contains(&channel),
        "channel must be one of {}, got {channel:?}",
        CHANNELS.join(", ")
    );
    Ok(())
}

pub fn run(config_path: Option<&Path>, command: PairingCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config_path)?;
    let rt = super::small_runtime()?;
    let store = super::open_store(&cfg, &rt)?;
    rt.block_on(async {
        match command {
            PairingCommand::List { json } => {
                let requests = store.pairing_list(now_ms()).await?;
                let allowed = store.allowed_list().await?;
                if json {
                    outln!(
                        "{}",
                        serde_json::json!({"requests": requests, "allowed": allowed})
                    );
                    return anyhow::Ok(ExitCode::SUCCESS);
                }
                if requests.is_empty() {
                    outln!("no pairing requests waiting");
                }
                for r in &requests {
                    let mins = (r.expires_at - now_ms()).max(0) / 60_000;
                    outln!(
                        "{:<9} {}  from {} ({})  expires in {mins} min",
                        r.channel,
                        r.code,
                        r.sender_id,
                        r.sender_name.as_deref().unwrap_or("no name"),
                    );
                }
                if !allowed.is_empty() {
                    outln!("\napproved:");
                    for a in &allowed {
                        outln!(
                            "{:<9} {} ({}) via {}",
                            a.channel,
                            a.sender_id,
                            a.sender_name.as_deref().unwrap_or("no name"),
                            a.via
                        );
                    }
                }
            }
            PairingCommand::Approve { channel, code } => {
                check_channel(&channel)?;
                let code = code.trim().to_string();
                anyhow::ensure!(
                    code.chars().count() == CODE_LEN,
                    "the code must be {CODE_LEN} characters, got {code:?}"
                );
                let Some(req) = store.pairing_approve(&channel, &code, now_ms()).await? else {
                    eprintln!(
                        "no pending request on {channel} with code {code} (expired or already used?)\n\
                         hint: `moltbot pairing list` shows the waiting codes"
                    );
                    return Ok(ExitCode::FAILURE);
                };
                store
                    .outbox_enqueue(vec![NewOutbox {
                        channel: req.channel.clone(),
                        chat_id: req.chat_id.clone(),
                        text: APPROVED_MESSAGE.to_string(),
                        reply_to: None,
                        thread: None,
                        dedupe_key: None,
                    }])
                    .await?;
                outln!(
                    "approved {} ({}) on {}",
                    req.sender_id,
                    req.sender_name.as_deref().unwrap_or("no name"),
                    req.channel
                );
            }
            PairingCommand::Allow { channel, sender } => {
                check_channel(&channel)?;
                store.allowed_add(&channel, &sender, "cli").await?;
                outln!("allowed {sender} on {channel}");
            }
            PairingCommand::Revoke { channel, sender } => {
                check_channel(&channel)?;
                if store.allowed_remove(&channel, &sender).await? {
                    outln!("revoked {sender} on {channel}");
                } else {
                    eprintln!("{sender} was not approved on {channel}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
