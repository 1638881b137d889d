//! PostgreSQL restarting under a running gateway: while it is down, turns fail fast with
//! HTTP 503 (JSON error, `Retry-After`) and `/health` says the store is down; once it is
//! back the gateway serves again by itself, with nothing it accepted lost.
//!
//! The test runs its own PostgreSQL cluster (`scripts/services.sh` on a port and folder of
//! its own) so stopping it disturbs no other test. Needs the PostgreSQL binaries, which
//! `scripts/services.sh start postgres` installs: it runs when `MOLTBOT_TEST_POSTGRES` is
//! set (that script has run), else it is skipped. The gateway's log must not contain the
//! database password, whatever it logged about the outage.

use moltbot_fakes::FakeOpenAi;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "pg-restart-token";
const PASSWORD: &str = "pw-must-not-be-logged-7f3a";

/// A PostgreSQL cluster of this test's own; stopped and deleted on drop.
struct Cluster {
    port: u16,
    dir: PathBuf,
}

fn services(cluster: &Cluster, verb: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
    let out = Command::new("bash")
        .arg(script)
        .args([verb, "postgres"])
        .env("MOLTBOT_PG_PORT", cluster.port.to_string())
        .env("MOLTBOT_PG_DIR", &cluster.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "services.sh {verb} postgres: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
        let _ = Command::new("bash")
            .arg(script)
            .args(["stop", "postgres"])
            .env("MOLTBOT_PG_PORT", self.port.to_string())
            .env("MOLTBOT_PG_DIR", &self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn chat(client: &reqwest::Client, port: u16, message: &str) -> (u16, Value, Option<String>) {
    let r = client
        .post(format!("http://127.0.0.1:{port}/api/v1/chat"))
        .bearer_auth(TOKEN)
        .json(&json!({"session_id": "s", "message": message}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, r.json().await.unwrap_or(Value::Null), retry)
}

async fn health(client: &reqwest::Client, port: u16) -> Value {
    client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_gives_fast_503s_then_recovers() {
    if std::env::var("MOLTBOT_TEST_POSTGRES").map_or(true, |u| u.is_empty()) {
        eprintln!("skipping: set MOLTBOT_TEST_POSTGRES (scripts/services.sh start postgres)");
        return;
    }
    let cluster = Cluster {
        port: free_port(),
        dir: PathBuf::from(format!(
            "/var/tmp/moltbot-pg-restart-{}",
            uuid::Uuid::new_v4().simple()
        )),
    };
    services(&cluster, "start");
    let fake = FakeOpenAi::builder().start().await;
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(home.path().join("gateway.log")).unwrap();
    let _gateway = Gateway(
        Command::new(env!("CARGO_BIN_EXE_moltbot"))
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("MOLTBOT_DATA__DIR", home.path().join("data"))
            // The test cluster trusts loopback, so any password is accepted: this one is
            // only there to be looked for in the log afterwards.
            .env(
                "MOLTBOT_DATA__DATABASE_URL",
                format!(
                    "postgres://moltbot:{PASSWORD}@127.0.0.1:{}/moltbot",
                    cluster.port
                ),
            )
            .env("MOLTBOT_GATEWAY__PORT", port.to_string())
            .env("MOLTBOT_GATEWAY_TOKEN", TOKEN)
            .env("MOLTBOT_UNDERSTANDING__ENCODER", "none")
            .env("MOLTBOT_ROUTER__ENABLED", "false")
            .env("MOLTBOT_KNOWLEDGE__ENABLED", "false")
            .env("MOLTBOT_TOOLS__MEMORY__ENABLED", "false")
            .env("MOLTBOT_TOOLS__AGENT__ENABLED", "false")
            .env("MOLTBOT_MODEL__PROVIDERS", "[\"openai\"]")
            .env("MOLTBOT_MODEL__OPENAI__BASE_URL", fake.base_url())
            .arg("gateway")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let gateway_log =
        || std::fs::read_to_string(home.path().join("gateway.log")).unwrap_or_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway not ready:\n{}",
            gateway_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        health(&client, port).await["components"]["store"]["backend"],
        "postgres"
    );
    for i in 0..3 {
        let (status, body, _) = chat(&client, port, &format!("before {i}")).await;
        assert_eq!(status, 200, "{body}");
    }

    services(&cluster, "stop");
    let started = Instant::now();
    let (status, body, retry) = chat(&client, port, "while down").await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}\n{}", gateway_log());
    assert_eq!(body["error"]["kind"], "unavailable", "{body}");
    assert!(retry.is_some(), "Retry-After on a 503");
    // Fast: within the pool's acquire timeout (3 s), not the client's 60 s.
    assert!(took < Duration::from_secs(15), "the 503 took {took:?}");
    let h = health(&client, port).await;
    assert_eq!(h["components"]["store"]["status"], "down", "{h}");

    services(&cluster, "start");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut recovered_after = 0;
    loop {
        let (status, body, _) = chat(&client, port, "after").await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        recovered_after += 1;
        assert!(Instant::now() < deadline, "no recovery:\n{}", gateway_log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("503 in {took:?}; served again after {recovered_after} more 503s");
    assert_eq!(
        health(&client, port).await["components"]["store"]["status"],
        "ok"
    );

    // What was accepted is there, once; the turn refused while down left nothing behind.
    let r: Value = client
        .get(format!("http://127.0.0.1:{port}/api/v1/sessions/s"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let texts: Vec<&str> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["before 0", "before 1", "before 2", "after"], "{r}");

    // The database password never reached the log, not even in the connection errors.
    let log = gateway_log();
    assert!(log.contains("store"), "the log is the gateway's: {log}");
    assert!(
        !log.contains(PASSWORD),
        "the database password is in the log:\n{log}"
    );
}
