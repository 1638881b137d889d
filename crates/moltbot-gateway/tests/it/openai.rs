use crate::context::TestContext;
use serde_json::{json, Value};

#[tokio::test]
async fn non_streaming_completion_has_openai_shape() {
    let ctx = TestContext::start().await;
    let v: Value = ctx
        .post("/v1/chat/completions")
        .json(&json!({"model": "moltbot", "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": [{"type": "text", "text": "hi there"}]}
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "moltbot");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hi there");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    // Stateless: the caller's own system prompt was used, not ours.
    let sent = ctx.fake.last_request().unwrap().json();
    assert_eq!(sent["messages"][0]["content"], "be terse");
    assert_eq!(sent["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn streaming_completion_ends_with_done_and_usage() {
    let ctx = TestContext::start().await;
    let text = ctx
        .post("/v1/chat/completions")
        .json(
            &json!({"model": "moltbot", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "stream this"}]}),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let datas: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(*datas.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = datas[..datas.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "echo: stream this");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let usage = chunks
        .iter()
        .find(|c| c["usage"].is_object())
        .expect("usage chunk");
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
}

#[tokio::test]
async fn user_field_makes_a_persistent_session() {
    let ctx = TestContext::start().await;
    for msg in ["first", "second"] {
        ctx.post("/v1/chat/completions")
            .json(&json!({"model": "moltbot", "user": "bob", "messages": [{"role": "user", "content": msg}]}))
            .send()
            .await
            .unwrap();
    }
    let sent = ctx.fake.last_request().unwrap().json();
    let contents: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents[1..], ["first", "echo: first", "second"]);
    let s: Value = ctx.get_json("/api/v1/sessions/openai:bob").await;
    assert_eq!(s["session"]["channel"], "openai");
}

#[tokio::test]
async fn invalid_openai_requests_name_the_field() {
    let ctx = TestContext::start().await;
    for (body, needle) in [
        (
            json!({"messages": []}),
            "`messages` must hold at least 1 message, got 0",
        ),
        (
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            "`messages[0].role`",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": 3.5}),
            "`temperature` must be between 0 and 2, got 3.5",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            "`n` must be 1, got 2",
        ),
        (json!({"model": "m"}), "messages"),
    ] {
        let resp = ctx
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(needle), "{m} should contain {needle}");
    }
}

#[tokio::test]
async fn models_are_listed() {
    let ctx = TestContext::start().await;
    let v: Value = ctx.get_json("/v1/models").await;
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"moltbot") && ids.contains(&"openai/fake-model"),
        "{ids:?}"
    );
    let one = ctx.get("/v1/models/moltbot").send().await.unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(
        ctx.get("/v1/models/nope").send().await.unwrap().status(),
        404
    );
}

#[tokio::test]
async fn a_streaming_client_that_goes_away_stops_generation() {
    use crate::context::Options;
    use futures::StreamExt;
    use std::time::Duration;
    let ctx = TestContext::with(Options {
        fake_chunk_delay: Duration::from_millis(100),
        fake_reply: Some("one two three four five six seven eight nine ten eleven twelve"),
        ..Options::default()
    })
    .await;
    let resp = ctx
        .post("/v1/chat/completions")
        .json(&json!({"model": "moltbot", "stream": true, "messages": [{"role": "user", "content": "go"}]}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    // Read until the first content arrives, then hang up.
    let mut seen = String::new();
    while !seen.contains("one") {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    drop(body);
    for _ in 0..100 {
        if ctx.fake.aborted_streams() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        ctx.fake.aborted_streams(),
        1,
        "the upstream stream was not cancelled"
    );
    assert_eq!(ctx.fake.completed_streams(), 0);
    // The permit came back.
    for _ in 0..100 {
        if ctx.state.inner.admission.available_permits() == 64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ctx.state.inner.admission.available_permits(), 64);
}
