//! `moltbot chat`: a terminal chat, against a running gateway or in process (`--local`).

use crate::cli::ChatArgs;
use anyhow::Context;
use futures::StreamExt;
use moltbot_engine::{Engine, Overrides, TurnEvent, TurnRequest};
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub fn run(config_path: Option<&Path>, args: ChatArgs) -> anyhow::Result<ExitCode> {
    let session = args
        .session
        .clone()
        .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::new_v4()));
    if args.local {
        let cfg = super::load_config(config_path)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(async {
            let engine = super::gateway::start_engine(&cfg).await?;
            repl(&args, &session, |msg| local_turn(&engine, &session, msg)).await
        });
    }
    let rt = super::small_runtime()?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        repl(&args, &session, |msg| {
            remote_turn(&client, &args, &session, msg)
        })
        .await
    })
}

async fn repl<F, Fut>(args: &ChatArgs, session: &str, mut turn: F) -> anyhow::Result<ExitCode>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    if let Some(m) = &args.message {
        turn(m.clone()).await?;
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("moltbot chat — session {session}. Empty line or Ctrl-D to quit.");
    let stdin = std::io::stdin();
    loop {
        eprint!("you> ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        if let Err(e) = turn(line.trim().to_string()).await {
            eprintln!("error: {e:#}");
        }
    }
}

async fn local_turn(engine: &Engine, session: &str, message: String) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel(64);
    let req = TurnRequest {
        turn_id: None,
        session_id: session.to_string(),
        run_id: None,
        user: None,
        message,
        channel: "cli",
        origin: None,
        overrides: Overrides::default(),
    };
    let engine = engine.clone();
    let task =
        tokio::spawn(async move { engine.turn(req, Some(tx), CancellationToken::new()).await });
    while let Some(event) = rx.recv().await {
        let d = match event {
            TurnEvent::Delta(d) => d,
            TurnEvent::Tool(t) => {
                if let moltbot_engine::ToolPhase::Start { arguments } = &t.phase {
                    eprintln!("[tool {} {}]", t.name, arguments);
                }
                continue;
            }
        };
        out!("{d}");
    }
    outln!();
    task.await??;
    Ok(())
}

async fn remote_turn(
    client: &reqwest::Client,
    args: &ChatArgs,
    session: &str,
    message: String,
) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/chat", args.url.trim_end_matches('/'));
    let mut req = client.post(&url).json(&serde_json::json!({
        "session_id": session, "message": message, "stream": true,
    }));
    if let Some(t) = &args.token {
        req = req.bearer_auth(t.expose());
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {}", args.url))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        anyhow::bail!(
            "gateway answered {status}: {}",
            body["error"]["message"].as_str().unwrap_or("(no message)")
        );
    }
    let mut events = eventsource_stream::EventStream::new(resp.bytes_stream());
    while let Some(ev) = events.next().await {
        let ev = ev.context("reading the reply stream")?;
        let data: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
        match ev.event.as_str() {
            "delta" => {
                out!("{}", data["text"].as_str().unwrap_or(""));
            }
            "error" => anyhow::bail!(
                "{}",
                data["error"]["message"].as_str().unwrap_or("turn failed")
            ),
            _ => {}
        }
    }
    outln!();
    Ok(())
}
