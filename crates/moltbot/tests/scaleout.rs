//! Three `moltbot gateway` processes on one Kafka-protocol broker (tansu, started by
//! `scripts/services.sh`; `MOLTBOT_TEST_KAFKA` names it) and one shared store, answering
//! chats from many sessions at once while one replica is killed with SIGKILL mid-load.
//! Every turn must be answered, and stored exactly once, in order: turns the dead replica
//! was running are run again by the others, and clients whose connection died retry on
//! another replica with the same `Idempotency-Key`. The dead replica then comes back under
//! its old name and serves again.

use moltbot_fakes::FakeOpenAi;
use moltbot_store::Store;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "scaleout-token";
const PARTITIONS: u32 = 6;
const SESSIONS: usize = 12;
const TURNS: usize = 6;

struct Replica {
    child: Option<Child>,
    port: u16,
    alive: Arc<AtomicBool>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Setup<'a> {
    brokers: &'a str,
    prefix: &'a str,
    data: &'a Path,
    openai: &'a str,
}

fn spawn(s: &Setup<'_>, name: &str, port: u16, home: &Path) -> Child {
    std::fs::create_dir_all(home).unwrap();
    let log = std::fs::File::create(home.join("gateway.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_moltbot"))
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MOLTBOT_DATA__DIR", s.data)
        .env("MOLTBOT_GATEWAY__PORT", port.to_string())
        .env("MOLTBOT_GATEWAY_TOKEN", TOKEN)
        .env("MOLTBOT_UNDERSTANDING__ENCODER", "none")
        .env("MOLTBOT_ROUTER__ENABLED", "false")
        .env("MOLTBOT_KNOWLEDGE__ENABLED", "false")
        .env("MOLTBOT_TOOLS__MEMORY__ENABLED", "false")
        .env("MOLTBOT_TOOLS__CRON__ENABLED", "false")
        .env("MOLTBOT_TOOLS__AGENT__ENABLED", "false")
        .env("MOLTBOT_MODEL__PROVIDERS", "[\"openai\"]")
        .env("MOLTBOT_MODEL__OPENAI__BASE_URL", s.openai)
        .env("MOLTBOT_BUS__KIND", "kafka")
        .env("MOLTBOT_BUS__BROKERS", s.brokers)
        .env("MOLTBOT_BUS__TOPIC_PREFIX", s.prefix)
        .env("MOLTBOT_BUS__GROUP_ID", format!("{}-group", s.prefix))
        .env("MOLTBOT_BUS__REPLICA_ID", name)
        .env("MOLTBOT_BUS__PARTITIONS", PARTITIONS.to_string())
        .env("MOLTBOT_BUS__SESSION_TIMEOUT_MS", "6000")
        .env("MOLTBOT_LOG__LEVEL", "info")
        .arg("gateway")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the moltbot binary")
}

async fn health(client: &reqwest::Client, port: u16) -> Option<Value> {
    client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Partitions each replica owns, from `/health`.
async fn owned(client: &reqwest::Client, ports: &[u16]) -> Vec<usize> {
    let mut out = Vec::new();
    for p in ports {
        let n = match health(client, *p).await {
            Some(h) => h["components"]["bus"]["detail"]["partitions"]
                .as_array()
                .map_or(0, Vec::len),
            None => 0,
        };
        out.push(n);
    }
    out
}

/// The last lines of each replica's log, for failure messages.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for entry in walk(dir) {
        if entry.file_name().is_some_and(|n| n == "gateway.log") {
            let text = std::fs::read_to_string(&entry).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("\n--- {}\n", entry.display()));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Wait until the live replicas own every partition between them, each some.
async fn settle(client: &reqwest::Client, ports: &[u16], what: &str, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let got = owned(client, ports).await;
        if got.iter().sum::<usize>() == PARTITIONS as usize && got.iter().all(|n| *n > 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: partitions {got:?}{}",
            logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One turn, retried on another live replica (same idempotency key) until answered.
async fn ask(
    client: &reqwest::Client,
    replicas: &[(u16, Arc<AtomicBool>)],
    first: usize,
    session: &str,
    turn: usize,
) -> (String, usize) {
    let message = format!("turn {turn} of {session}");
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut attempt = 0;
    loop {
        let (port, alive) = &replicas[(first + attempt) % replicas.len()];
        attempt += 1;
        if !alive.load(Ordering::Relaxed) {
            continue;
        }
        let sent = client
            .post(format!("http://127.0.0.1:{port}/api/v1/chat"))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", format!("t{turn}"))
            .json(&json!({"session_id": session, "message": message}))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                let v: Value = r.json().await.unwrap();
                return (v["reply"].as_str().unwrap_or_default().to_string(), attempt);
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                assert!(
                    status.is_server_error(),
                    "{session}/{turn}: HTTP {status}: {body}"
                );
            }
            // The replica died under the request: try another.
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "{session}/{turn} was never answered"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_lose_and_double_nothing_when_one_is_killed() {
    let Some(brokers) = std::env::var("MOLTBOT_TEST_KAFKA")
        .ok()
        .filter(|b| !b.is_empty())
    else {
        eprintln!("skipping: set MOLTBOT_TEST_KAFKA (scripts/services.sh start tansu)");
        return;
    };
    let prefix = format!("so{}", uuid::Uuid::new_v4().simple());
    // Replies stream for a while, so the kill lands in the middle of turns.
    let fake = FakeOpenAi::builder()
        .chunk_delay(Duration::from_millis(40))
        .start()
        .await;
    let openai = fake.base_url();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shared");
    let setup = Setup {
        brokers: &brokers,
        prefix: &prefix,
        data: &data,
        openai: &openai,
    };
    let names = ["r0", "r1", "r2"];
    let mut replicas: Vec<Replica> = names
        .iter()
        .map(|name| {
            let port = free_port();
            Replica {
                child: Some(spawn(&setup, name, port, &dir.path().join(name))),
                port,
                alive: Arc::new(AtomicBool::new(true)),
            }
        })
        .collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(200))
        .build()
        .unwrap();
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    settle(&client, &ports, "three replicas joining", dir.path()).await;

    let targets: Vec<(u16, Arc<AtomicBool>)> =
        replicas.iter().map(|r| (r.port, r.alive.clone())).collect();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        let (client, targets, answered) = (client.clone(), targets.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let session = format!("session-{s}");
            let mut retries = 0;
            for t in 0..TURNS {
                let (reply, attempts) = ask(&client, &targets, s + t, &session, t).await;
                assert_eq!(reply, format!("echo: turn {t} of {session}"));
                retries += attempts - 1;
                answered.fetch_add(1, Ordering::Relaxed);
            }
            retries
        }));
    }
    // Kill r2 with SIGKILL once a quarter of the turns are answered.
    let total = SESSIONS * TURNS;
    while answered.load(Ordering::Relaxed) < total / 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replicas[2].alive.store(false, Ordering::Relaxed);
    let mut victim = replicas[2].child.take().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed_at = answered.load(Ordering::Relaxed);
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap();
    }
    assert!(killed_at < total, "the kill landed before the load ended");
    eprintln!("killed r2 after {killed_at}/{total} turns; {retries} client retries");

    // Each session holds each turn once, in order: no loss, no double.
    let store = Store::open(&data.join("moltbot.db")).unwrap();
    for s in 0..SESSIONS {
        let session = format!("session-{s}");
        let got: Vec<String> = store
            .recent_messages(&session, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.content)
            .collect();
        let want: Vec<String> = (0..TURNS)
            .flat_map(|t| {
                let q = format!("turn {t} of {session}");
                [q.clone(), format!("echo: {q}")]
            })
            .collect();
        assert_eq!(got, want, "{session}");
    }

    // r2 comes back under its name and takes a share of the work again.
    let port = free_port();
    replicas[2] = Replica {
        child: Some(spawn(&setup, "r2", port, &dir.path().join("r2-again"))),
        port,
        alive: Arc::new(AtomicBool::new(true)),
    };
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    settle(&client, &ports, "r2 rejoining", dir.path()).await;
    let targets: Vec<(u16, Arc<AtomicBool>)> =
        replicas.iter().map(|r| (r.port, r.alive.clone())).collect();
    let (reply, attempts) = ask(&client, &targets, 2, "after-restart", 0).await;
    assert_eq!(reply, "echo: turn 0 of after-restart");
    assert_eq!(attempts, 1, "the restarted replica answered at once");
}
