//! `exec` with real processes in a temporary workspace.

use moltbot_core::config::{ExecConfig, ExecPolicy};
use moltbot_core::{Tool, ToolContext, ToolError};
use moltbot_tools::approvals::Approvals;
use moltbot_tools::exec::ExecTool;
use serde_json::json;
use std::time::Duration;

fn tool(policy: ExecPolicy, allow: &[&str], dir: &std::path::Path) -> (ExecTool, Approvals) {
    let cfg = ExecConfig {
        policy,
        allow: allow.iter().map(|s| s.to_string()).collect(),
        timeout_secs: 5,
        max_output_bytes: 1000,
        approval_timeout_secs: 5,
        ..ExecConfig::default()
    };
    let approvals = Approvals::new();
    (
        ExecTool::new(&cfg, dir.join("ws"), approvals.clone()).unwrap(),
        approvals,
    )
}

fn ctx() -> ToolContext {
    ToolContext::detached("s-exec")
}

#[tokio::test]
async fn deny_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (t, _) = tool(ExecPolicy::Deny, &["echo"], dir.path());
    let err = t
        .call(json!({"command": "echo hi"}), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::Denied(_)), "{err}");
    assert!(err.to_string().contains("tools.exec.policy"), "{err}");
}

#[tokio::test]
async fn allowlisted_commands_run_in_the_workspace_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (t, _) = tool(ExecPolicy::Allowlist, &["pwd", "env", "ls"], dir.path());
    let out = t.call(json!({"command": "pwd"}), &ctx()).await.unwrap();
    let ws = dir.path().join("ws").canonicalize().unwrap();
    assert!(out.text.starts_with("exit code: 0\n"), "{}", out.text);
    assert!(out.text.contains(ws.to_str().unwrap()), "{}", out.text);
    // The gateway's environment (API keys) does not reach the command.
    std::env::set_var("MOLTBOT_TEST_SECRET_KEY", "sk-very-secret");
    let out = t.call(json!({"command": "env"}), &ctx()).await.unwrap();
    assert!(!out.text.contains("sk-very-secret"), "{}", out.text);
    assert!(out.text.contains("HOME="), "{}", out.text);
    // A failing command reports its exit code and stderr.
    let out = t
        .call(json!({"command": "ls /definitely/not/here"}), &ctx())
        .await
        .unwrap();
    assert!(out.text.starts_with("exit code: 2"), "{}", out.text);
    assert!(out.text.contains("--- stderr ---"), "{}", out.text);
}

#[tokio::test]
async fn the_allowlist_cannot_be_smuggled_past() {
    let dir = tempfile::tempdir().unwrap();
    let (t, _) = tool(ExecPolicy::Allowlist, &["echo"], dir.path());
    for cmd in [
        "echo hi; touch pwned",
        "echo hi && touch pwned",
        "echo $(touch pwned)",
        "echo hi > pwned",
        "touch pwned",
        "/tmp/echo hi",
    ] {
        let err = t.call(json!({"command": cmd}), &ctx()).await.unwrap_err();
        assert!(matches!(err, ToolError::Denied(_)), "{cmd}: {err}");
    }
    assert!(!dir.path().join("ws/pwned").exists());
    // Quoting is honoured: one argument with a semicolon inside quotes is still refused
    // (operators anywhere make a command non-plain), but plain quoted words work.
    let out = t
        .call(json!({"command": "echo 'two words'"}), &ctx())
        .await
        .unwrap();
    assert!(out.text.contains("two words"), "{}", out.text);
}

#[tokio::test]
async fn cwd_must_stay_inside_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let (t, _) = tool(ExecPolicy::Allowlist, &["pwd"], dir.path());
    std::fs::create_dir_all(dir.path().join("ws/sub")).unwrap();
    let out = t
        .call(json!({"command": "pwd", "cwd": "sub"}), &ctx())
        .await
        .unwrap();
    assert!(out.text.contains("/ws/sub"), "{}", out.text);
    for bad in ["..", "/etc", "sub/../..", "missing"] {
        let err = t
            .call(json!({"command": "pwd", "cwd": bad}), &ctx())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("`cwd` must be"), "{bad}: {err}");
    }
}

#[tokio::test]
async fn output_is_capped_and_slow_commands_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (t, _) = tool(ExecPolicy::Allowlist, &["seq", "sleep"], dir.path());
    let out = t
        .call(json!({"command": "seq 1 100000"}), &ctx())
        .await
        .unwrap();
    assert!(
        out.text.contains("[stdout cut at 1000 of 588895 bytes]"),
        "{}",
        &out.text[out.text.len() - 80..]
    );
    let mut c = ctx();
    c.timeout = Duration::from_secs(1);
    let err = t
        .call(json!({"command": "sleep 30"}), &c)
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::Timeout(_)), "{err}");
}

#[tokio::test]
async fn ask_waits_for_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (t, approvals) = tool(ExecPolicy::Ask, &["echo"], dir.path());
    let t = std::sync::Arc::new(t);
    // Allowlisted commands still run at once.
    let out = t
        .call(json!({"command": "echo fine"}), &ctx())
        .await
        .unwrap();
    assert!(out.text.contains("fine"));
    // Anything else waits; the owner approves it and it runs through the shell.
    let mut requests = approvals.subscribe();
    let run = tokio::spawn({
        let t = t.clone();
        async move { t.call(json!({"command": "echo a | tr a b"}), &ctx()).await }
    });
    let req = requests.recv().await.unwrap();
    assert_eq!(req.command, "echo a | tr a b");
    assert_eq!(approvals.list().len(), 1);
    assert!(approvals.decide(&req.id, true));
    let out = run.await.unwrap().unwrap();
    assert!(out.text.contains("--- stdout ---\nb"), "{}", out.text);
    assert!(approvals.list().is_empty());
    // Denied.
    let run = tokio::spawn({
        let t = t.clone();
        async move { t.call(json!({"command": "touch nope"}), &ctx()).await }
    });
    let req = requests.recv().await.unwrap();
    assert!(approvals.decide(&req.id, false));
    let err = run.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("did not approve"), "{err}");
    assert!(!dir.path().join("ws/nope").exists());
    assert!(!approvals.decide("unknown", true));
}
