//! Gateway replicas as real processes for the scale-out tests: each a `moltbot gateway`
//! on the Kafka bus with a shared store (PostgreSQL or one SQLite file), the fake model.
#![allow(dead_code)] // each test binary uses its own part

use moltbot_store::Store;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const TOKEN: &str = "scaleout-token";
pub const PARTITIONS: u32 = 6;

pub struct Replica {
    pub child: Option<Child>,
    pub port: u16,
    pub alive: Arc<AtomicBool>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub struct Setup<'a> {
    pub brokers: &'a str,
    pub prefix: &'a str,
    pub data: &'a Path,
    pub openai: &'a str,
    /// PostgreSQL URL and schema, when the replicas share PostgreSQL.
    pub pg: Option<(String, String)>,
    /// `bus.fetch_wait_ms` when not the default (a broker on slow storage).
    pub fetch_wait_ms: Option<u32>,
}

impl Setup<'_> {
    /// The shared store, as the replicas see it.
    pub async fn store(&self) -> Store {
        match &self.pg {
            Some((url, schema)) => {
                let opts = moltbot_store::PgOptions::new(url).schema(schema.clone());
                Store::connect_postgres(&opts).await.unwrap()
            }
            None => Store::open(&self.data.join("moltbot.db")).unwrap(),
        }
    }

    /// `moltbot` with a replica's environment: the store (its own data folder when the
    /// store is PostgreSQL, else the shared one), the fake model, no extras.
    pub fn command(&self, home: &Path) -> Command {
        std::fs::create_dir_all(home).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_moltbot"));
        cmd.env_clear()
            .env("HOME", home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        match &self.pg {
            Some((url, schema)) => cmd
                .env("MOLTBOT_DATA__DIR", home.join("data"))
                .env("MOLTBOT_DATA__DATABASE_URL", url)
                .env("MOLTBOT_DATA__DATABASE_SCHEMA", schema),
            None => cmd.env("MOLTBOT_DATA__DIR", self.data),
        };
        cmd
    }
}

pub fn spawn(s: &Setup<'_>, name: &str, port: u16, home: &Path) -> Child {
    let mut cmd = s.command(home);
    let log = std::fs::File::create(home.join("gateway.log")).unwrap();
    if let Some(ms) = s.fetch_wait_ms {
        cmd.env("MOLTBOT_BUS__FETCH_WAIT_MS", ms.to_string());
    }
    cmd.env("MOLTBOT_GATEWAY__PORT", port.to_string())
        .env("MOLTBOT_GATEWAY_TOKEN", TOKEN)
        .env("MOLTBOT_UNDERSTANDING__ENCODER", "none")
        .env("MOLTBOT_ROUTER__ENABLED", "false")
        .env("MOLTBOT_KNOWLEDGE__ENABLED", "false")
        .env("MOLTBOT_TOOLS__MEMORY__ENABLED", "false")
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
        .env(
            "MOLTBOT_LOG__LEVEL",
            std::env::var("MOLTBOT_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .arg("gateway")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the moltbot binary")
}

pub async fn health(client: &reqwest::Client, port: u16) -> Option<Value> {
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
pub async fn owned(client: &reqwest::Client, ports: &[u16]) -> Vec<usize> {
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

/// The last lines of each replica's log, for failure messages. With `MOLTBOT_TEST_KEEP`
/// set to a folder, every `*.log` file of the test folder is also copied there.
pub fn logs(dir: &Path) -> String {
    let mut out = String::new();
    if let Some(keep) = std::env::var_os("MOLTBOT_TEST_KEEP") {
        let to = Path::new(&keep).join(format!(
            "{}-{}",
            dir.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        for f in walk(dir) {
            let rel = f.strip_prefix(dir).unwrap();
            if f.extension().is_some_and(|e| e == "log") {
                let dest = to.join(rel);
                std::fs::create_dir_all(dest.parent().unwrap()).ok();
                std::fs::copy(&f, &dest).ok();
            }
        }
        out.push_str(&format!("\n(logs kept in {})", to.display()));
    }
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

pub fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
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

/// Wait until `count` reaches `n`; fails the test with the replicas' logs after `within`.
pub async fn wait_count(
    count: &std::sync::atomic::AtomicUsize,
    n: usize,
    within: Duration,
    dir: &Path,
) {
    let deadline = Instant::now() + within;
    while count.load(std::sync::atomic::Ordering::Relaxed) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} turns answered in {within:?}{}",
            count.load(std::sync::atomic::Ordering::Relaxed),
            logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until the live replicas own every partition between them, each some.
pub async fn settle(client: &reqwest::Client, ports: &[u16], what: &str, dir: &Path) {
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

/// The shared PostgreSQL (URL and a fresh schema) when `MOLTBOT_TEST_POSTGRES` is set.
pub fn pg_from_env() -> Option<(String, String)> {
    std::env::var("MOLTBOT_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
        .map(|url| (url, format!("t_{}", uuid::Uuid::new_v4().simple())))
}

/// Start replicas `names` (ports chosen here), each in a folder of its own under `dir`.
pub fn start_replicas(setup: &Setup<'_>, names: &[&str], dir: &Path) -> Vec<Replica> {
    names
        .iter()
        .map(|name| {
            let port = free_port();
            Replica {
                child: Some(spawn(setup, name, port, &dir.join(name))),
                port,
                alive: Arc::new(AtomicBool::new(true)),
            }
        })
        .collect()
}

/// One turn, retried on another live replica (same idempotency key) until answered.
pub async fn ask(
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

/// Each session `<prefix><n>` (n < `sessions`) holds turns 0..`turns` exactly once, in
/// order: `turn {t} of {session}` and the fake model's `echo: …` answer. `dir` holds the
/// replicas' logs, shown on failure.
pub async fn assert_turns_stored_once(
    store: &Store,
    prefix: &str,
    sessions: usize,
    turns: usize,
    dir: &Path,
) {
    for s in 0..sessions {
        let session = format!("{prefix}{s}");
        let got: Vec<String> = store
            .recent_messages(&session, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.content)
            .collect();
        let want: Vec<String> = (0..turns)
            .flat_map(|t| {
                let q = format!("turn {t} of {session}");
                [q.clone(), format!("echo: {q}")]
            })
            .collect();
        assert_eq!(got, want, "{session}{}", logs(dir));
    }
}

/// A tansu broker of the test's own, stopped when dropped.
pub struct Broker {
    pub child: Child,
    pub addr: String,
}

/// Where a test broker keeps its log.
#[derive(Clone)]
pub enum Storage {
    /// In memory: a restart loses everything.
    Memory,
    /// In a bucket of the S3 store at the URL (moto, `MOLTBOT_TEST_S3`): a restart keeps
    /// what the broker had written out, as a Kafka broker's disk does.
    S3 { url: String, bucket: String },
}

impl Broker {
    /// Start tansu (`MOLTBOT_TEST_TANSU_BIN`) on `addr` with memory storage, logging to
    /// `log`; waits until it accepts connections. `None` when the variable is not set.
    pub async fn start(addr: &str, log: &Path) -> Option<Broker> {
        Self::start_with(addr, log, &Storage::Memory).await
    }

    pub async fn start_with(addr: &str, log: &Path, storage: &Storage) -> Option<Broker> {
        let bin = std::env::var("MOLTBOT_TEST_TANSU_BIN")
            .ok()
            .filter(|b| !b.is_empty())?;
        let mut cmd = Command::new(bin);
        cmd.arg("broker")
            .args(["--listener-url", &format!("tcp://{addr}")])
            .args(["--advertised-listener-url", &format!("tcp://{addr}")]);
        match storage {
            Storage::Memory => {
                cmd.args(["--storage-engine", "memory://tansu/"]);
            }
            Storage::S3 { url, bucket } => {
                // moto takes any credentials; tansu's object store needs some.
                cmd.args(["--storage-engine", &format!("s3://{bucket}/")])
                    .env("AWS_ENDPOINT", url)
                    .env("AWS_ACCESS_KEY_ID", "moltbot-test")
                    .env("AWS_SECRET_ACCESS_KEY", "moltbot-test")
                    .env("AWS_DEFAULT_REGION", "us-east-1")
                    .env("AWS_ALLOW_HTTP", "true");
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start on {addr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(Broker {
            child,
            addr: addr.to_string(),
        })
    }

    /// A fresh bucket in the test S3 store (`MOLTBOT_TEST_S3`), or `None` without one.
    pub async fn s3_bucket(prefix: &str) -> Option<Storage> {
        let url = std::env::var("MOLTBOT_TEST_S3")
            .ok()
            .filter(|u| !u.is_empty())?;
        let bucket = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        let r = reqwest::Client::new()
            .put(format!("{url}/{bucket}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the S3 store at {url} does not answer: {e}"));
        assert!(
            r.status().is_success(),
            "cannot create bucket {bucket}: {}",
            r.status()
        );
        Some(Storage::S3 { url, bucket })
    }

    /// Send the broker a signal (`STOP`, `CONT`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {}", self.child.id());
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two replicas on the broker at `addr`, sharing a store (PostgreSQL when
/// `MOLTBOT_TEST_POSTGRES` is set, else one SQLite file), answered by the fake model
/// streaming a chunk every `chunk_delay`; ready once they own the partitions between them.
pub struct Pair {
    pub fake: moltbot_fakes::FakeOpenAi,
    pub replicas: Vec<Replica>,
    pub ports: Vec<u16>,
    /// A client whose requests give up after `client_timeout`.
    pub client: reqwest::Client,
    addr: String,
    prefix: String,
    openai: String,
    data: std::path::PathBuf,
    pg: Option<(String, String)>,
    fetch_wait_ms: Option<u32>,
}

impl Pair {
    /// `fetch_wait_ms`: `bus.fetch_wait_ms` for the replicas, `None` for the default.
    pub async fn start(
        addr: &str,
        prefix: &str,
        names: &[&str],
        chunk_delay: Duration,
        client_timeout: Duration,
        dir: &Path,
        fetch_wait_ms: Option<u32>,
    ) -> Pair {
        let fake = moltbot_fakes::FakeOpenAi::builder()
            .chunk_delay(chunk_delay)
            .start()
            .await;
        let mut pair = Pair {
            openai: fake.base_url(),
            fake,
            replicas: Vec::new(),
            ports: Vec::new(),
            client: reqwest::Client::builder()
                .timeout(client_timeout)
                .build()
                .unwrap(),
            addr: addr.to_string(),
            prefix: prefix.to_string(),
            data: dir.join("shared"),
            pg: pg_from_env(),
            fetch_wait_ms,
        };
        pair.replicas = start_replicas(&pair.setup(), names, dir);
        pair.ports = pair.replicas.iter().map(|r| r.port).collect();
        settle(&pair.client, &pair.ports, "replicas joining", dir).await;
        pair
    }

    pub fn setup(&self) -> Setup<'_> {
        Setup {
            brokers: &self.addr,
            prefix: &self.prefix,
            data: &self.data,
            openai: &self.openai,
            pg: self.pg.clone(),
            fetch_wait_ms: self.fetch_wait_ms,
        }
    }
}
