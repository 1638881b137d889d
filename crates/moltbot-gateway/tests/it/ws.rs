//! The OpenClaw protocol over a real WebSocket.

use crate::context::{Options, TestContext, TOKEN};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frame within 10 s")
            .expect("connection open")
            .expect("frame ok");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(c) => return json!({"closed": c.map(|c| u16::from(c.code))}),
            _ => continue,
        }
    }
}

fn connect_params(token: &str, min: u64, max: u64) -> Value {
    json!({"type": "req", "id": "1:abc", "method": "connect", "params": {
        "minProtocol": min, "maxProtocol": max,
        "client": {"id": "cli", "version": "test", "platform": "linux", "mode": "cli"},
        "role": "operator", "scopes": ["operator.admin"],
        "auth": {"token": token}}})
}

async fn open(ctx: &TestContext, path: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}{path}", ctx.ws_url()))
        .await
        .unwrap();
    let challenge = next_json(&mut ws).await;
    (ws, challenge)
}

async fn connected(ctx: &TestContext) -> Ws {
    let (mut ws, _) = open(ctx, "/").await;
    ws.send(Message::text(connect_params(TOKEN, 3, 4).to_string()))
        .await
        .unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["ok"], true, "{hello}");
    ws
}

async fn call(ws: &mut Ws, id: &str, method: &str, params: Value) -> Value {
    ws.send(Message::text(
        json!({"type": "req", "id": id, "method": method, "params": params}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        let v = next_json(ws).await;
        if v["type"] == "res" && v["id"] == id {
            return v;
        }
    }
}

#[tokio::test]
async fn handshake_challenge_then_hello_ok() {
    let ctx = TestContext::start().await;
    let (mut ws, challenge) = open(&ctx, "/any/path").await;
    assert_eq!(challenge["type"], "event");
    assert_eq!(challenge["event"], "connect.challenge");
    assert_eq!(challenge["payload"]["nonce"].as_str().unwrap().len(), 36);
    assert!(challenge["payload"]["ts"].is_u64());
    ws.send(Message::text(connect_params(TOKEN, 3, 4).to_string()))
        .await
        .unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "res");
    assert_eq!(hello["id"], "1:abc");
    let p = &hello["payload"];
    assert_eq!(p["type"], "hello-ok");
    assert_eq!(p["protocol"], 4);
    assert!(p["server"]["connId"].is_string());
    assert!(p["features"]["methods"]
        .as_array()
        .unwrap()
        .contains(&json!("chat.send")));
    assert_eq!(p["snapshot"]["stateVersion"]["presence"], 0);
    assert_eq!(p["auth"]["scopes"], json!(["operator.admin"]));
    assert_eq!(p["policy"]["tickIntervalMs"], 30000);
    assert_eq!(
        p["policy"]["maxPayload"], 65536,
        "the body limit of the test config"
    );
}

#[tokio::test]
async fn wrong_token_is_refused_and_closed_1008() {
    let ctx = TestContext::start().await;
    let (mut ws, _) = open(&ctx, "/").await;
    ws.send(Message::text(connect_params("nope", 4, 4).to_string()))
        .await
        .unwrap();
    let res = next_json(&mut ws).await;
    assert_eq!(res["ok"], false);
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    assert!(res["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("unauthorized: gateway token mismatch"));
    assert_eq!(res["error"]["details"]["code"], "AUTH_TOKEN_MISMATCH");
    assert_eq!(
        next_json(&mut ws).await["closed"],
        u16::from(CloseCode::Policy)
    );
}

#[tokio::test]
async fn protocol_mismatch_and_non_connect_first() {
    let ctx = TestContext::start().await;
    let (mut ws, _) = open(&ctx, "/").await;
    ws.send(Message::text(connect_params(TOKEN, 5, 6).to_string()))
        .await
        .unwrap();
    let res = next_json(&mut ws).await;
    assert_eq!(res["error"]["message"], "protocol mismatch");
    assert_eq!(res["error"]["details"]["expectedProtocol"], 4);
    assert_eq!(next_json(&mut ws).await["closed"], 1002);

    let (mut ws, _) = open(&ctx, "/").await;
    ws.send(Message::text(
        json!({"type": "req", "id": "x", "method": "health"}).to_string(),
    ))
    .await
    .unwrap();
    let res = next_json(&mut ws).await;
    assert_eq!(
        res["error"]["message"],
        "invalid handshake: first request must be connect"
    );
    assert_eq!(next_json(&mut ws).await["closed"], 1008);
}

#[tokio::test]
async fn chat_send_streams_events_and_history_follows() {
    let ctx = TestContext::start().await;
    let mut ws = connected(&ctx).await;
    let sub = call(&mut ws, "s", "sessions.subscribe", json!({})).await;
    assert_eq!(sub["payload"]["subscribed"], true);
    let key = "agent:main:main";
    ws.send(Message::text(
        json!({"type": "req", "id": "2", "method": "chat.send", "params": {
        "sessionKey": key, "message": "hello ws", "deliver": false, "idempotencyKey": "run-1"}})
        .to_string(),
    ))
    .await
    .unwrap();
    let ack = next_json(&mut ws).await;
    assert_eq!(
        ack["payload"],
        json!({"runId": "run-1", "status": "started"})
    );
    let mut deltas = String::new();
    let mut last_seq = 0;
    let final_ev = loop {
        let ev = next_json(&mut ws).await;
        assert_eq!(ev["type"], "event");
        if ev["event"] != "chat" {
            continue;
        }
        let p = &ev["payload"];
        assert_eq!(p["runId"], "run-1");
        assert_eq!(p["sessionKey"], key);
        let seq = p["seq"].as_u64().unwrap();
        assert!(seq > last_seq);
        last_seq = seq;
        match p["state"].as_str().unwrap() {
            "delta" => deltas.push_str(p["deltaText"].as_str().unwrap()),
            "final" => break p.clone(),
            other => panic!("unexpected state {other}"),
        }
    };
    assert_eq!(deltas, "echo: hello ws");
    assert_eq!(final_ev["message"]["content"][0]["text"], "echo: hello ws");
    assert_eq!(final_ev["stopReason"], "stop");

    let hist = call(
        &mut ws,
        "3",
        "chat.history",
        json!({"sessionKey": key, "limit": 200}),
    )
    .await;
    let msgs = hist["payload"]["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(msgs[0]["content"], "hello ws");
    assert_eq!(msgs[1]["content"][0]["text"], "echo: hello ws");

    let list = call(&mut ws, "4", "sessions.list", json!({"limit": 10})).await;
    assert_eq!(list["payload"]["sessions"][0]["key"], key);
    let desc = call(&mut ws, "5", "sessions.describe", json!({"key": key})).await;
    assert_eq!(desc["payload"]["session"]["key"], key);
    let missing = call(
        &mut ws,
        "6",
        "sessions.describe",
        json!({"key": "agent:main:other"}),
    )
    .await;
    assert!(missing["payload"]["session"].is_null());
}

#[tokio::test]
async fn agent_method_answers_accepted_then_final() {
    let ctx = TestContext::start().await;
    let mut ws = connected(&ctx).await;
    let agents = call(&mut ws, "a", "agents.list", json!({})).await;
    assert_eq!(agents["payload"]["defaultId"], "main");
    ws.send(Message::text(
        json!({"type": "req", "id": "9", "method": "agent", "params": {
        "message": "do it", "agentId": "main", "deliver": false, "timeout": 600,
        "idempotencyKey": "k-9"}})
        .to_string(),
    ))
    .await
    .unwrap();
    let mut statuses = Vec::new();
    let fin = loop {
        let v = next_json(&mut ws).await;
        if v["type"] == "res" && v["id"] == "9" {
            statuses.push(v["payload"]["status"].as_str().unwrap().to_string());
            if v["payload"]["status"] != "accepted" {
                break v;
            }
        }
    };
    assert_eq!(statuses, ["accepted", "ok"]);
    assert_eq!(fin["payload"]["runId"], "k-9");
    assert_eq!(
        fin["payload"]["result"]["payloads"][0]["text"],
        "echo: do it"
    );
}

#[tokio::test]
async fn health_unknown_methods_and_list_stubs() {
    let ctx = TestContext::start().await;
    let mut ws = connected(&ctx).await;
    let h = call(&mut ws, "h", "health", Value::Null).await;
    assert_eq!(h["ok"], true);
    assert_eq!(h["payload"]["defaultAgentId"], "main");
    assert!(h["payload"]["agents"][0]["sessions"]["count"].is_i64());
    let u = call(&mut ws, "u", "no.such.method", json!({})).await;
    assert_eq!(u["error"]["message"], "unknown method: no.such.method");
    assert_eq!(
        call(&mut ws, "q", "question.list", json!({})).await["payload"],
        json!({"questions": []})
    );
    assert_eq!(
        call(&mut ws, "p", "plugin.approval.list", json!({})).await["payload"],
        json!([])
    );
    let bad = call(
        &mut ws,
        "b",
        "chat.send",
        json!({"sessionKey": "agent:main:main", "message": "x"}),
    )
    .await;
    assert_eq!(
        bad["error"]["message"],
        "invalid chat.send params: must have required property 'idempotencyKey'"
    );
}

#[tokio::test]
async fn ticks_arrive_at_the_configured_interval() {
    let ctx = TestContext::with(Options {
        tick_interval_ms: 200,
        ..Options::default()
    })
    .await;
    let mut ws = connected(&ctx).await;
    let tick = next_json(&mut ws).await;
    assert_eq!(tick["event"], "tick");
    assert!(tick["payload"]["ts"].is_u64());
    assert!(
        tick["seq"].as_u64().unwrap() >= 2,
        "challenge was seq 1: {tick}"
    );
}

#[tokio::test]
async fn chat_abort_stops_a_run() {
    let ctx = TestContext::with(Options {
        fake_delay: Duration::from_secs(5),
        ..Options::default()
    })
    .await;
    let mut ws = connected(&ctx).await;
    ws.send(Message::text(
        json!({"type": "req", "id": "r", "method": "chat.send", "params": {
        "sessionKey": "agent:main:main", "message": "long one", "idempotencyKey": "run-x"}})
        .to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["payload"]["status"], "started");
    let ab = call(
        &mut ws,
        "ab",
        "chat.abort",
        json!({"sessionKey": "agent:main:main", "runId": "run-x"}),
    )
    .await;
    assert_eq!(ab["payload"]["aborted"], true);
    assert_eq!(ab["payload"]["runIds"], json!(["run-x"]));
    loop {
        let ev = next_json(&mut ws).await;
        if ev["event"] == "chat" {
            assert_eq!(ev["payload"]["state"], "aborted");
            break;
        }
    }
}

#[tokio::test]
async fn browser_origins_other_than_this_machine_are_refused() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ctx = TestContext::start().await;
    let mut req = ctx.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("403"), "{err}");
    let mut req = ctx.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", "http://localhost:5173".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
}

#[tokio::test]
async fn subscribers_see_turns_made_by_other_clients() {
    let ctx = TestContext::start().await;
    let mut watcher = connected(&ctx).await;
    call(&mut watcher, "s", "sessions.subscribe", json!({})).await;
    let mut other = connected(&ctx).await;
    // A turn over HTTP and one from another WebSocket, both on the main session.
    ctx.post("/api/v1/chat")
        .json(&json!({"session_id": "agent:main:main", "message": "from http"}))
        .send()
        .await
        .unwrap();
    other
        .send(Message::text(
            json!({"type": "req", "id": "o", "method": "chat.send", "params": {
                "sessionKey": "agent:main:main", "message": "from ws", "idempotencyKey": "other-1"}})
            .to_string(),
        ))
        .await
        .unwrap();
    let mut finals = Vec::new();
    let mut last_seq = std::collections::HashMap::new();
    let mut user_lines = Vec::new();
    while finals.len() < 2 {
        let ev = next_json(&mut watcher).await;
        if ev["event"] == "session.message" {
            let p = &ev["payload"];
            assert_eq!(p["sessionKey"], "agent:main:main");
            assert_eq!(p["message"]["role"], "user");
            assert!(p["messageId"].is_string() && p["runId"].is_string(), "{p}");
            user_lines.push(p["message"]["content"].as_str().unwrap().to_string());
            continue;
        }
        if ev["event"] != "chat" {
            continue;
        }
        let p = &ev["payload"];
        assert_eq!(p["sessionKey"], "agent:main:main");
        let run = p["runId"].as_str().unwrap().to_string();
        let seq = p["seq"].as_u64().unwrap();
        let prev = last_seq.insert(run.clone(), seq).unwrap_or(0);
        assert_eq!(seq, prev + 1, "per-run seq must count up: {p}");
        if p["state"] == "final" {
            finals.push(
                p["message"]["content"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    finals.sort();
    assert_eq!(finals, ["echo: from http", "echo: from ws"]);
    user_lines.sort();
    assert_eq!(user_lines, ["from http", "from ws"]);
    // The connection that ran `chat.send` gets its own run's final once, not also relayed:
    // count finals until the answer to a request sent after the run ended.
    let mut own_finals = 0;
    let mut asked = false;
    loop {
        let ev = next_json(&mut other).await;
        if ev["event"] == "chat"
            && ev["payload"]["runId"] == "other-1"
            && ev["payload"]["state"] == "final"
        {
            own_finals += 1;
            if !asked {
                asked = true;
                other
                    .send(Message::text(
                        json!({"type": "req", "id": "h", "method": "health"}).to_string(),
                    ))
                    .await
                    .unwrap();
            }
        }
        if ev["type"] == "res" && ev["id"] == "h" {
            break;
        }
    }
    assert_eq!(own_finals, 1);
}
