//! `moltbot channels status` and `moltbot message send`: through the running gateway,
//! which owns the channel connections.

use super::client::GatewayClient;
use crate::cli::{ChannelsCommand, MessageCommand};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

pub fn run_status(
    config_path: Option<&Path>,
    command: ChannelsCommand,
) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config_path)?;
    let ChannelsCommand::Status { gateway, json } = command;
    let client = GatewayClient::new(&cfg, gateway)?;
    let rt = super::small_runtime()?;
    let value = rt.block_on(client.call("/api/v1/channels", None))?;
    if json {
        outln!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    let list = value["channels"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        outln!("no channel is enabled (set channels.<name>.enabled = true in the config)");
    }
    for c in list {
        let detail = c["detail"]
            .as_str()
            .map(|d| format!("  ({d})"))
            .unwrap_or_default();
        outln!(
            "{:<10} {:<11} dm_policy={:<9} outbox: {} pending, {} failed{detail}",
            c["channel"].as_str().unwrap_or("?"),
            c["status"].as_str().unwrap_or("?"),
            c["dm_policy"].as_str().unwrap_or("?"),
            c["outbox_pending"],
            c["outbox_failed"],
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `moltbot approvals list|approve|deny`.
pub fn run_approvals(
    config_path: Option<&Path>,
    command: crate::cli::ApprovalsCommand,
) -> anyhow::Result<ExitCode> {
    use crate::cli::ApprovalsCommand as A;
    let cfg = super::load_config(config_path)?;
    let rt = super::small_runtime()?;
    let (gateway, id, approve) = match command {
        A::List { gateway, json } => {
            let client = GatewayClient::new(&cfg, gateway)?;
            let value = rt.block_on(client.call("/api/v1/approvals", None))?;
            if json {
                outln!("{value}");
                return Ok(ExitCode::SUCCESS);
            }
            let list = value["approvals"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                outln!("no approval is pending");
            }
            for a in list {
                outln!(
                    "{}  {}  session={}  `{}`",
                    a["id"].as_str().unwrap_or("?"),
                    a["tool"].as_str().unwrap_or("?"),
                    a["session_id"].as_str().unwrap_or("?"),
                    a["command"].as_str().unwrap_or("?"),
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        A::Approve { id, gateway } => (gateway, id, true),
        A::Deny { id, gateway } => (gateway, id, false),
    };
    let client = GatewayClient::new(&cfg, gateway)?;
    let path = format!("/api/v1/approvals/{id}");
    rt.block_on(client.call(&path, Some(json!({"approve": approve}))))?;
    outln!("{} {id}", if approve { "approved" } else { "denied" });
    Ok(ExitCode::SUCCESS)
}

/// `moltbot capabilities`: one line per tool and skill.
pub fn run_capabilities(
    config_path: Option<&Path>,
    gateway: crate::cli::GatewayClientArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config_path)?;
    let client = GatewayClient::new(&cfg, gateway)?;
    let rt = super::small_runtime()?;
    let value = rt.block_on(client.call("/api/v1/capabilities", None))?;
    if json {
        outln!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    for c in value["capabilities"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let why = c["reason"]
            .as_str()
            .map(|r| format!("  ({r})"))
            .unwrap_or_default();
        let tools = c["tools"]
            .as_array()
            .map(|t| {
                let names: Vec<&str> = t.iter().filter_map(|n| n.as_str()).collect();
                format!("  tools: {}", names.join(", "))
            })
            .unwrap_or_default();
        outln!(
            "{:<6} {:<12} {:<9}{why}{tools}",
            c["kind"].as_str().unwrap_or("?"),
            c["name"].as_str().unwrap_or("?"),
            c["status"].as_str().unwrap_or("?"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_message(
    config_path: Option<&Path>,
    command: MessageCommand,
) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config_path)?;
    let MessageCommand::Send {
        channel,
        to,
        text,
        no_wait,
        gateway,
        json,
    } = command;
    let client = GatewayClient::new(&cfg, gateway)?;
    let rt = super::small_runtime()?;
    let body = json!({
        "channel": channel,
        "to": to,
        "text": text,
        "wait_secs": if no_wait { 0 } else { 30 },
    });
    let value = rt.block_on(client.call("/api/v1/channels/send", Some(body)))?;
    if json {
        outln!("{value}");
    } else {
        let status = value["status"].as_str().unwrap_or("?");
        for m in value["messages"].as_array().into_iter().flatten() {
            match m["platform_id"].as_str() {
                Some(id) => outln!("{id}"),
                None => eprintln!(
                    "outbox #{} {}{}",
                    m["outbox_id"],
                    m["status"].as_str().unwrap_or("?"),
                    m["error"]
                        .as_str()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            }
        }
        eprintln!("{status}");
    }
    Ok(match value["status"].as_str() {
        Some("failed") => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}
