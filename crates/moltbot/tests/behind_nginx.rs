//! Three replicas on Kafka + PostgreSQL behind nginx, configured by the shipped
//! `deploy/nginx/moltbot.conf` (only its upstream, listen and TLS lines are swapped for
//! loopback): REST turns, an OpenAI-style SSE stream and an OpenClaw WebSocket session all
//! work through the proxy, `least_conn` spreads the load over every replica, and each
//! session's turns — wherever they landed — are stored once, in order.
//!
//! Needs `MOLTBOT_TEST_KAFKA`, `MOLTBOT_TEST_POSTGRES` (`scripts/services.sh start`) and
//! nginx (`scripts/setup-deps.sh --test`); skipped otherwise.

mod common;

use common::{settle, Setup, TOKEN};
use futures::{SinkExt, StreamExt};
use moltbot_fakes::FakeOpenAi;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const SESSIONS: usize = 9;
const TURNS: usize = 4;

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers first. SIGKILL would leave them running,
        // orphaned, after the test.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..50 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The shipped site file with loopback upstreams and a plain-HTTP listener, wrapped in a
/// minimal main config.
fn write_config(dir: &Path, port: u16, upstreams: &[u16]) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/moltbot.conf");
    let text = std::fs::read_to_string(shipped).unwrap();
    let servers: String = upstreams
        .iter()
        .map(|p| format!("    server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;\n"))
        .collect();
    let mut out = String::new();
    let (mut upstream_done, mut listen_done) = (false, false);
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("server moltbot:18789") {
            out.push_str(&servers);
            upstream_done = true;
        } else if t.starts_with("listen 8443") {
            out.push_str(&format!("    listen 127.0.0.1:{port};\n"));
            listen_done = true;
        } else if t.starts_with("listen [::]") || t.starts_with("ssl_") {
            // TLS is nginx's own business; the test speaks plain HTTP to it.
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        upstream_done && listen_done,
        "deploy/nginx/moltbot.conf changed shape: update this test"
    );
    std::fs::write(dir.join("moltbot.conf"), out).unwrap();
    let root = if is_root() { "user root;\n" } else { "" };
    let d = dir.display();
    let main = format!(
        "{root}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/moltbot.conf;\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, main).unwrap();
    path
}

/// Whether this process runs as root (nginx's workers then need `user root` to reach the
/// test's folder). Read from /proc, without libc.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

async fn turn(client: &reqwest::Client, base: &str, session: &str, t: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = client
            .post(format!("{base}/api/v1/chat"))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", format!("t{t}"))
            .json(&json!({"session_id": session, "message": format!("turn {t} of {session}")}))
            .send()
            .await;
        if let Ok(r) = r {
            let status = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return v["reply"].as_str().unwrap_or_default().to_string();
            }
            assert!(status.is_server_error(), "{session}/{t}: {status} {v}");
        }
        assert!(Instant::now() < deadline, "{session}/{t} never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `/api/v1/chat` requests a replica served, from its `/metrics`.
async fn chat_requests(client: &reqwest::Client, port: u16) -> u64 {
    let text = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("moltbot_http_requests_total") && l.contains("/api/v1/chat"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a frame within 30 s")
            .expect("connection open")
            .expect("frame ok");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_nginx_serve_http_sse_and_websocket() {
    let brokers = std::env::var("MOLTBOT_TEST_KAFKA").unwrap_or_default();
    let pg = common::pg_from_env();
    let (Some(nginx), false, Some(pg)) = (nginx_binary(), brokers.is_empty(), pg) else {
        eprintln!("skipping: needs nginx, MOLTBOT_TEST_KAFKA and MOLTBOT_TEST_POSTGRES");
        return;
    };
    let prefix = format!("ng{}", uuid::Uuid::new_v4().simple());
    // Streaming replies take a while, so concurrent turns overlap and least_conn spreads.
    let fake = FakeOpenAi::builder()
        .chunk_delay(Duration::from_millis(15))
        .start()
        .await;
    let openai = fake.base_url();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("unused");
    let setup = Setup {
        brokers: &brokers,
        prefix: &prefix,
        data: &data,
        openai: &openai,
        pg: Some(pg),
        fetch_wait_ms: None,
    };
    let replicas = common::start_replicas(&setup, &["n0", "n1", "n2"], dir.path());
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    settle(&client, &ports, "three replicas joining", dir.path()).await;

    let ngx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&ngx_dir).unwrap();
    let ngx_port = common::free_port();
    let conf = write_config(&ngx_dir, ngx_port, &ports);
    let _nginx = Nginx(
        Command::new(nginx)
            .arg("-p")
            .arg(&ngx_dir)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{ngx_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/health")).send().await.is_err() {
        let err = std::fs::read_to_string(ngx_dir.join("error.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "nginx did not start: {err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // REST: sessions in parallel, turns in order, through the proxy.
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        let (client, base) = (client.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let session = format!("ng-{s}");
            for t in 0..TURNS {
                let reply = turn(&client, &base, &session, t).await;
                assert_eq!(reply, format!("echo: turn {t} of {session}"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    // Every replica took a share of the requests.
    let mut served = Vec::new();
    for p in &ports {
        served.push(chat_requests(&client, *p).await);
    }
    assert_eq!(
        served.iter().sum::<u64>(),
        (SESSIONS * TURNS) as u64,
        "{served:?}"
    );
    assert!(
        served.iter().all(|n| *n > 0),
        "least_conn left a replica idle: {served:?}"
    );
    eprintln!("chat requests per replica through nginx: {served:?}");

    // OpenAI-compatible SSE through the proxy: the deltas make up the reply.
    let resp = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .json(&json!({"model": "moltbot", "stream": true,
                      "messages": [{"role": "user", "content": "stream me"}]}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let body = resp.text().await.unwrap();
    let mut text = String::new();
    let mut chunks = 0;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(d) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(d);
            chunks += 1;
        }
    }
    assert_eq!(text, "echo: stream me", "{body}");
    assert!(chunks > 1, "streamed in pieces: {body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

    // The OpenClaw WebSocket protocol through the proxy's Upgrade handling.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{ngx_port}/"))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["event"], "connect.challenge");
    ws.send(Message::text(
        json!({"type": "req", "id": "1", "method": "connect", "params": {
            "minProtocol": 3, "maxProtocol": 4,
            "client": {"id": "cli", "version": "test", "platform": "linux", "mode": "cli"},
            "role": "operator", "scopes": ["operator.admin"], "auth": {"token": TOKEN}}})
        .to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["ok"], true);
    ws.send(Message::text(
        json!({"type": "req", "id": "2", "method": "chat.send", "params": {
            "sessionKey": "agent:main:nginx", "message": "hello ws", "deliver": false,
            "idempotencyKey": "ws-run-1"}})
        .to_string(),
    ))
    .await
    .unwrap();
    let mut deltas = String::new();
    let final_text = loop {
        let ev = next_json(&mut ws).await;
        if ev["event"] != "chat" {
            continue;
        }
        match ev["payload"]["state"].as_str() {
            Some("delta") => deltas.push_str(ev["payload"]["deltaText"].as_str().unwrap()),
            Some("final") => break ev["payload"]["message"]["content"][0]["text"].clone(),
            other => panic!("chat event {other:?}: {ev}"),
        }
    };
    assert_eq!(final_text, "echo: hello ws");
    assert_eq!(deltas, "echo: hello ws");

    // Each session's turns, wherever they ran, are stored once and in order.
    let store = setup.store().await;
    common::assert_turns_stored_once(&store, "ng-", SESSIONS, TURNS, dir.path()).await;
}
