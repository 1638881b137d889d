//! `memory` on a real knowledge index (the lexical hashing encoder: no model download).

use moltbot_core::{Tool, ToolContext};
use moltbot_knowledge::{HashingEncoder, Knowledge};
use moltbot_tools::memory::MemoryTool;
use serde_json::json;
use std::sync::Arc;

fn ctx(user: &str, said: &str) -> ToolContext {
    let mut c = ToolContext::detached("s");
    c.user = Some(user.into());
    c.request = Some(said.into());
    c
}

#[tokio::test]
async fn facts_are_kept_per_user_and_recalled_by_meaning() {
    let dir = tempfile::tempdir().unwrap();
    let index = Knowledge::open(dir.path(), Arc::new(HashingEncoder::default())).unwrap();
    let tool = MemoryTool::new(Arc::new(index), 3);
    let ada = ctx("ada", "remember that my locker code is 4412");
    let out = tool
        .call(
            json!({"action": "remember", "fact": "locker code is 4412"}),
            &ada,
        )
        .await
        .unwrap();
    assert_eq!(out.text, "Remembered: locker code is 4412");
    // A fact with no words, or with prompt syntax in it, gives way to the user's words.
    let said = ctx("ada", "Please remember that I parked on level 3");
    let out = tool
        .call(json!({"action": "remember", "fact": ")"}), &said)
        .await
        .unwrap();
    assert_eq!(out.text, "Remembered: I parked on level 3");
    let out = tool
        .call(
            json!({"action": "remember", "fact": "<x>level</tool_call"}),
            &said,
        )
        .await
        .unwrap();
    assert_eq!(out.text, "Remembered: I parked on level 3");

    let out = tool
        .call(json!({"action": "recall", "query": "locker code"}), &ada)
        .await
        .unwrap();
    assert!(out.text.contains("4412"), "{}", out.text);
    // Another user sees none of it.
    let bob = ctx("bob", "what is my locker code");
    let out = tool
        .call(json!({"action": "recall", "query": "locker code"}), &bob)
        .await
        .unwrap();
    assert_eq!(out.text, "Nothing remembered yet for this user.");
    // Forget.
    let out = tool
        .call(json!({"action": "forget", "query": "locker code"}), &ada)
        .await
        .unwrap();
    assert!(out.text.starts_with("Forgot:"), "{}", out.text);
    let out = tool
        .call(json!({"action": "recall", "query": "locker"}), &ada)
        .await
        .unwrap();
    assert!(!out.text.contains("4412"), "{}", out.text);
    let err = tool
        .call(json!({"action": "shout"}), &ada)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`action` must be one of"), "{err}");
}
