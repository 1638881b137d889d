use crate::context::{Options, TestContext, TOKEN};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (status, body)
}

#[tokio::test]
async fn health_reports_components_and_environment() {
    let ctx = TestContext::start().await;
    // No token needed for health.
    let resp = ctx.client().get(ctx.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h: Value = resp.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["components"]["store"]["status"], "ok");
    assert_eq!(h["components"]["model"]["status"], "ok");
    assert_eq!(h["components"]["model"]["id"], "openai/fake-model");
    assert!(h["version"].is_string());
    assert!(h["uptime_ms"].is_u64());
    assert!(h["environment"]["cpu_count"].as_u64().unwrap() >= 1);
    assert!(h["environment"]["memory_total_bytes"].as_u64().unwrap() > 0);
    assert!(h["environment"]["os"].is_string());
    for (path, key, val) in [
        ("/healthz", "status", json!("live")),
        ("/readyz", "ready", json!(true)),
        ("/startupz", "status", json!("started")),
    ] {
        let v: Value = ctx
            .client()
            .get(ctx.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v[key], val, "{path}: {v}");
    }
}

#[tokio::test]
async fn chat_turn_persists_and_sessions_are_listed() {
    let ctx = TestContext::start().await;
    let r: Value = ctx
        .post("/api/v1/chat")
        .json(&json!({"session_id": "s-1", "user": "ann", "message": "hello there"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["session_id"], "s-1");
    assert_eq!(r["reply"], "echo: hello there");
    assert!(r["latency_ms"].as_f64().unwrap() >= 0.0);
    // The model saw the system prompt and the message.
    let sent = ctx.fake.last_request().unwrap().json();
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(sent["messages"][1]["content"], "hello there");

    // A second turn carries the history.
    ctx.post("/api/v1/chat")
        .json(&json!({"session_id": "s-1", "message": "and again"}))
        .send()
        .await
        .unwrap();
    let sent = ctx.fake.last_request().unwrap().json();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 4);

    let list: Value = ctx.get_json("/api/v1/sessions").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["sessions"][0]["id"], "s-1");
    assert_eq!(list["sessions"][0]["message_count"], 4);
    let one: Value = ctx.get_json("/api/v1/sessions/s-1").await;
    assert_eq!(one["messages"].as_array().unwrap().len(), 4);
    assert_eq!(one["messages"][3]["content"], "echo: and again");
    let missing = ctx.get("/api/v1/sessions/nope").send().await.unwrap();
    assert_eq!(missing.status(), 404);

    // New session id when none is given.
    let r: Value = ctx
        .post("/api/v1/chat")
        .json(&json!({"message": "fresh"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["session_id"].as_str().unwrap().len(), 36);
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retry_safe() {
    let ctx = TestContext::start().await;
    let send = |key: &'static str, message: &'static str| {
        ctx.post("/api/v1/chat")
            .header("Idempotency-Key", key)
            .json(&json!({"session_id": "s-idem", "message": message}))
            .send()
    };
    let first: Value = send("k-1", "book it").await.unwrap().json().await.unwrap();
    assert_eq!(first["reply"], "echo: book it");
    let calls = ctx.fake.requests();
    // The client retries (its connection dropped before it saw the answer).
    let again: Value = send("k-1", "book it").await.unwrap().json().await.unwrap();
    assert_eq!(again["reply"], "echo: book it");
    assert_eq!(again["route"]["reason"], "redelivered");
    assert_eq!(ctx.fake.requests(), calls, "the model was not asked twice");
    let one: Value = ctx.get_json("/api/v1/sessions/s-idem").await;
    assert_eq!(one["messages"].as_array().unwrap().len(), 2);
    // Another key is another turn.
    let other: Value = send("k-2", "book it").await.unwrap().json().await.unwrap();
    assert_eq!(other["reply"], "echo: book it");
    let one: Value = ctx.get_json("/api/v1/sessions/s-idem").await;
    assert_eq!(one["messages"].as_array().unwrap().len(), 4);
    // A malformed key is refused, naming the header.
    let resp = send("not a key!", "x").await.unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{body}"
    );
}

#[tokio::test]
async fn chat_streams_sse_deltas() {
    let ctx = TestContext::start().await;
    let text = ctx
        .post("/api/v1/chat")
        .json(&json!({"session_id": "st", "message": "stream me", "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut reply = String::new();
    let mut done = None;
    let mut event = "";
    for line in text.lines() {
        if let Some(e) = line.strip_prefix("event: ") {
            event = e;
        } else if let Some(d) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(d).unwrap();
            match event {
                "delta" => reply.push_str(v["text"].as_str().unwrap()),
                "done" => done = Some(v),
                other => panic!("unexpected event {other}: {v}"),
            }
        }
    }
    assert_eq!(reply, "echo: stream me");
    assert_eq!(done.unwrap()["reply"], "echo: stream me");
}

#[tokio::test]
async fn bad_input_is_rejected_with_named_fields() {
    let ctx = TestContext::start().await;
    // Not JSON.
    let (s, b) = error_of(
        ctx.post("/api/v1/chat")
            .header("content-type", "application/json")
            .body("{nope")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(b["error"]["kind"], "invalid_request");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    // Missing field.
    let (s, b) = error_of(
        ctx.post("/api/v1/chat")
            .json(&json!({"session_id": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"].as_str().unwrap().contains("message"),
        "{b}"
    );
    // Wrong type names the field.
    let (s, b) = error_of(
        ctx.post("/api/v1/chat")
            .json(&json!({"message": 5}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`message`"),
        "{b}"
    );
    // Unknown field.
    let (s, b) = error_of(
        ctx.post("/api/v1/chat")
            .json(&json!({"message": "x", "sesion": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"].as_str().unwrap().contains("sesion"),
        "{b}"
    );
    // Too long: names the field, the limit and the value.
    let long = "y".repeat(1001);
    let (s, b) = error_of(
        ctx.post("/api/v1/chat")
            .json(&json!({"message": long}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    let m = b["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("`message`") && m.contains("1000") && m.contains("1001"),
        "{m}"
    );
    // Bad session id.
    let (s, b) = error_of(
        ctx.post("/api/v1/chat")
            .json(&json!({"message": "x", "session_id": "a b"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("session_id"));
    // Out-of-range sampling.
    let (s, b) = error_of(
        ctx.post("/api/v1/chat")
            .json(&json!({"message": "x", "max_tokens": 0}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["error"]["message"],
        "`max_tokens` must be between 1 and 32768, got 0"
    );
    // Body over the limit.
    let huge = "z".repeat(70 * 1024);
    let (s, b) = error_of(
        ctx.post("/api/v1/chat")
            .json(&json!({"message": huge}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 413);
    assert_eq!(b["error"]["kind"], "payload_too_large");
    assert!(b["error"]["message"].as_str().unwrap().contains("65536"));
    // Unknown route: JSON 404.
    let (s, b) = error_of(ctx.get("/api/v1/nothing").send().await.unwrap()).await;
    assert_eq!(s, 404);
    assert_eq!(b["error"]["kind"], "not_found");
    // Nothing of the above reached the model.
    assert_eq!(ctx.fake.requests(), 0);
}

#[tokio::test]
async fn token_is_required_on_api_routes() {
    let ctx = TestContext::start().await;
    for (path, body) in [
        ("/api/v1/chat", Some(json!({"message": "x"}))),
        (
            "/v1/chat/completions",
            Some(json!({"messages": [{"role": "user", "content": "x"}]})),
        ),
        ("/v1/models", None),
        ("/api/v1/sessions", None),
        ("/metrics", None),
    ] {
        let req = match &body {
            Some(b) => ctx.client().post(ctx.url(path)).json(b),
            None => ctx.client().get(ctx.url(path)),
        };
        let (s, b) = error_of(req.send().await.unwrap()).await;
        assert_eq!(s, 401, "{path}");
        assert_eq!(b["error"]["kind"], "unauthorized");
        let req = match &body {
            Some(b) => ctx.client().post(ctx.url(path)).json(b),
            None => ctx.client().get(ctx.url(path)),
        };
        let s = req.bearer_auth("wrong").send().await.unwrap().status();
        assert_eq!(s, 401, "{path} with a wrong token");
    }
    assert_eq!(ctx.fake.requests(), 0);
}

#[tokio::test]
async fn concurrency_limit_answers_429_with_retry_after() {
    let ctx = TestContext::with(Options {
        max_concurrent_turns: 1,
        fake_delay: Duration::from_millis(400),
        ..Options::default()
    })
    .await;
    let slow = {
        let req = ctx
            .post("/api/v1/chat")
            .json(&json!({"session_id": "a", "message": "slow"}));
        tokio::spawn(async move { req.send().await.unwrap().status() })
    };
    // Wait until the first turn holds the only permit.
    for _ in 0..200 {
        if ctx.state.inner.admission.available_permits() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let resp = ctx
        .post("/api/v1/chat")
        .json(&json!({"session_id": "b", "message": "second"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["error"]["kind"], "rate_limited");
    assert!(b["error"]["message"].as_str().unwrap().contains("limit 1"));
    assert_eq!(slow.await.unwrap(), 200);
    // Accepted work was not lost: the slow turn is stored.
    let one: Value = ctx.get_json("/api/v1/sessions/a").await;
    assert_eq!(one["session"]["message_count"], 2);
}

#[tokio::test]
async fn metrics_expose_latency_histogram_and_http_counters() {
    let ctx = TestContext::start().await;
    ctx.post("/api/v1/chat")
        .json(&json!({"message": "count me"}))
        .send()
        .await
        .unwrap();
    ctx.post("/api/v1/chat")
        .body("bad")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let text = ctx.metrics().await;
    for needle in [
        "moltbot_inference_latency_bucket{le=\"10\"}",
        "moltbot_inference_latency_bucket{le=\"1000\"}",
        "moltbot_concurrent_users",
        "moltbot_error_rate",
        "moltbot_errors_total{kind=\"invalid_request\"}",
        "moltbot_http_requests_total{route=\"/api/v1/chat\",method=\"POST\",status=\"200\"}",
        "moltbot_http_request_duration_bucket{route=\"/api/v1/chat\"",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // The process collector: resident memory is a real, plausible number of bytes.
    let rss: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap_or_else(|| panic!("no process_resident_memory_bytes in\n{text}"))
        .trim()
        .parse()
        .unwrap();
    assert!(rss > 1_000_000.0 && rss < 64e9, "rss {rss}");
    assert!(text.contains("process_cpu_seconds_total"), "{text}");
}

/// Ten wrong tokens in a minute from one address: the eleventh request is refused with 429
/// and `Retry-After`, even with the right token, on the API and the admin API alike.
#[tokio::test]
async fn repeated_wrong_tokens_lock_the_address() {
    let ctx = TestContext::start().await;
    for i in 0..10 {
        let resp = ctx
            .client()
            .get(ctx.url("/api/v1/sessions"))
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "guess {i}");
    }
    let resp = ctx.get("/api/v1/sessions").send().await.unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["kind"], "auth_rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit 10 per minute"),
        "{body}"
    );
    // Health stays open.
    let h = ctx.client().get(ctx.url("/health")).send().await.unwrap();
    assert_eq!(h.status(), 200);
}

/// With a drain delay, shutdown first takes the instance out of rotation (probes 503
/// `draining`) while it still answers turns, then closes.
#[tokio::test]
async fn drain_delay_fails_probes_but_keeps_serving() {
    let mut ctx = TestContext::with(Options {
        drain_delay_secs: 4,
        ..Options::default()
    })
    .await;
    let started = std::time::Instant::now();
    let server = ctx.begin_shutdown();
    let deadline = started + std::time::Duration::from_secs(3);
    loop {
        let r = ctx.client().get(ctx.url("/readyz")).send().await.unwrap();
        if r.status() == 503 {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["draining"], true, "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readyz never said draining"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let h = ctx.client().get(ctx.url("/health")).send().await.unwrap();
    assert_eq!(h.status(), 503);
    let h: Value = h.json().await.unwrap();
    assert_eq!(h["status"], "draining");
    // Still serving turns while draining.
    let resp = ctx
        .post("/api/v1/chat")
        .json(&json!({"message": "still there?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.await.unwrap().unwrap();
}

/// A background component that fails makes `/health` say `degraded` (naming it and why)
/// while it waits to restart, and `ok` again once it runs.
#[tokio::test]
async fn health_is_degraded_while_a_component_restarts() {
    let ctx = TestContext::start().await;
    let (fail_tx, fail_rx) = tokio::sync::watch::channel(false);
    let stop = tokio_util::sync::CancellationToken::new();
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let r = runs.clone();
    let s2 = stop.clone();
    ctx.state
        .inner
        .supervisor
        .spawn("test.flaky", stop.clone(), move || {
            let n = r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut fail = fail_rx.clone();
            let stop = s2.clone();
            async move {
                if n == 0 {
                    let _ = fail.wait_for(|f| *f).await;
                    return Err(moltbot_core::Failure::retry("lost its connection"));
                }
                stop.cancelled().await;
                Ok(())
            }
        });
    let until = |want: &'static str| {
        let ctx = &ctx;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let h = ctx.get_json("/health").await;
                if h["status"] == want {
                    return h;
                }
                assert!(std::time::Instant::now() < deadline, "never {want}: {h}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    let h = until("ok").await;
    assert_eq!(
        h["components"]["supervised"]["test.flaky"]["status"],
        "running"
    );
    assert_eq!(
        h["components"]["supervised"]["metrics.upkeep"]["status"],
        "running"
    );
    fail_tx.send(true).unwrap();
    let h = until("degraded").await;
    let flaky = &h["components"]["supervised"]["test.flaky"];
    assert_eq!(flaky["status"], "restarting", "{h}");
    assert_eq!(flaky["last_error"], "lost its connection");
    // Degraded is not unready: turns are still served.
    let ready = ctx.client().get(ctx.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let h = until("ok").await;
    let flaky = &h["components"]["supervised"]["test.flaky"];
    assert_eq!(flaky["status"], "running");
    assert_eq!(flaky["restarts"], 1);
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    let text = ctx.metrics().await;
    assert!(
        text.contains("moltbot_component_restarts_total{component=\"test.flaky\"} 1"),
        "{text}"
    );
    stop.cancel();
}

#[tokio::test]
async fn history_survives_a_gateway_restart() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let ctx = TestContext::with(Options {
        dir: Some(dir.clone()),
        ..Options::default()
    })
    .await;
    ctx.post("/api/v1/chat")
        .json(&json!({"session_id": "keep", "message": "remember the number 42"}))
        .send()
        .await
        .unwrap();
    ctx.shutdown().await.unwrap();

    let ctx = TestContext::with(Options {
        dir: Some(dir.clone()),
        ..Options::default()
    })
    .await;
    ctx.post("/api/v1/chat")
        .json(&json!({"session_id": "keep", "message": "what was it?"}))
        .send()
        .await
        .unwrap();
    let sent = ctx.fake.last_request().unwrap().json();
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4, "{sent}");
    assert_eq!(msgs[1]["content"], "remember the number 42");
    assert_eq!(msgs[2]["content"], "echo: remember the number 42");
}

#[tokio::test]
async fn shutdown_drains_in_flight_turns() {
    let mut ctx = TestContext::with(Options {
        fake_delay: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    let req = ctx
        .post("/api/v1/chat")
        .json(&json!({"session_id": "d", "message": "finish me"}));
    let turn = tokio::spawn(async move { req.send().await.unwrap() });
    for _ in 0..200 {
        if ctx.fake.requests() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let server = ctx.begin_shutdown();
    let resp = turn.await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["reply"], "echo: finish me");
    server.await.unwrap().unwrap();
    // New connections are refused after shutdown.
    assert!(ctx.client().get(ctx.url("/health")).send().await.is_err());
}

#[tokio::test]
async fn oneshot_handlers_without_a_socket() {
    let ctx = TestContext::start().await;
    let app = moltbot_gateway::app(ctx.state.clone());
    let resp = app
        .clone()
        .oneshot(
            Request::get("/v1/models")
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "moltbot"));
    let page = app
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&html).contains("<title>moltbot</title>"));
}

#[test]
fn non_loopback_without_token_refuses_to_start() {
    let mut cfg = moltbot_core::Config::default();
    cfg.gateway.bind = "0.0.0.0".parse().unwrap();
    let err = cfg.check_bind_safety().unwrap_err().to_string();
    assert!(
        err.contains("refusing to listen on 0.0.0.0 without a token"),
        "{err}"
    );
}

#[tokio::test]
async fn without_a_token_only_loopback_host_names_are_served() {
    let ctx = TestContext::with(Options {
        token: None,
        ..Options::default()
    })
    .await;
    // No token configured: requests without Authorization work from this machine...
    let ok = ctx
        .client()
        .post(ctx.url("/api/v1/chat"))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // ...but a DNS-rebinding page (its own name resolving to 127.0.0.1) is refused.
    let resp = ctx
        .client()
        .get(ctx.url("/api/v1/sessions"))
        .header("host", "evil.example:18789")
        .send()
        .await
        .unwrap();
    let (s, b) = error_of(resp).await;
    assert_eq!(s, 403);
    assert_eq!(b["error"]["kind"], "forbidden");
}

#[tokio::test]
async fn json_content_type_is_required_and_methods_are_a_fixed_label_set() {
    let ctx = TestContext::start().await;
    let (s, b) = error_of(
        ctx.post("/api/v1/chat")
            .header("content-type", "text/plain")
            .body(r#"{"message":"x"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Content-Type"),
        "{b}"
    );
    let odd = reqwest::Method::from_bytes(b"RND123").unwrap();
    ctx.client()
        .request(odd, ctx.url("/x"))
        .send()
        .await
        .unwrap();
    let text = ctx.metrics().await;
    assert!(!text.contains("RND123"));
    assert!(text.contains("method=\"other\""), "{text}");
    // Query-string mistakes are JSON 400s too.
    let (s, b) = error_of(ctx.get("/api/v1/sessions?limit=abc").send().await.unwrap()).await;
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"].as_str().unwrap().contains("limit"),
        "{b}"
    );
    // The bearer scheme is case-insensitive.
    let r = ctx
        .client()
        .get(ctx.url("/v1/models"))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn channel_webhooks_are_served_whatever_the_host_and_without_the_bearer_token() {
    use axum::body::Body;
    use tower::ServiceExt;
    // Platforms reach webhooks through a public name; the webhook checks its own signature.
    let ctx = TestContext::with(Options {
        token: None,
        ..Options::default()
    })
    .await;
    let hooks = axum::Router::new().route(
        "/channels/test/webhook",
        axum::routing::post(|| async { "taken" }),
    );
    let app = moltbot_gateway::app_with(ctx.state.clone(), hooks);
    let req = |path: &str| {
        axum::http::Request::post(path)
            .header("host", "bot.example.com")
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap()
    };
    let resp = app
        .clone()
        .oneshot(req("/channels/test/webhook"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The API under the same foreign name is still refused.
    let resp = app.clone().oneshot(req("/api/v1/chat")).await.unwrap();
    assert_eq!(resp.status(), 403);
    // With no channel enabled, the channel routes say so.
    let b = ctx.get_json("/api/v1/channels").await;
    assert_eq!(b["channels"], json!([]));
    let resp = ctx
        .post("/api/v1/channels/send")
        .json(&json!({"channel": "telegram", "to": "1", "text": "x"}))
        .send()
        .await
        .unwrap();
    let (s, b) = error_of(resp).await;
    assert_eq!(s, 404);
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no channel is enabled"));
    let b = ctx.get_json("/health").await;
    assert_eq!(b["components"]["channels"], json!({}));
}
