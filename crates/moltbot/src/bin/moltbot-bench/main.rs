//! `moltbot-bench`: a load generator and start-up probe for the gateway.
//!
//! - `load`: N concurrent clients, each running turns back to back for a bounded number of
//!   turns, over `/api/v1/chat` (http), `/v1/chat/completions` (openai) or the OpenClaw
//!   WebSocket (`chat.send` until the `final` event). Prints turns/s and p50/p95/p99.
//!   Pointing `--mode openai` at the mock model itself measures the harness ceiling.
//! - `workload`: the four dialogue workloads of DESIGN.md on the understand + route path,
//!   with labelled turns so accuracy is measured beside QPS and latency: `short` (one turn
//!   per `/api/v1/understand` call), `long` (each turn buried in 150–250 words of neutral
//!   filler), `multi` (sessions of many turns over `/api/v1/chat`, intent read from the
//!   route metadata), `batch` (`{texts: [...]}` calls).
//! - `generate`: generation speed over the streamed OpenAI API (throughput at a concurrency,
//!   time to first token under a long shared system prompt, latency late in a conversation),
//!   against this gateway or llama.cpp's `llama-server` alike (`generate.rs`).
//! - `startup`: spawn a gateway command, poll `/health` every millisecond until it answers
//!   200, report the elapsed time and the process's RSS after it settles, then stop it.

mod generate;
mod mixed;

use clap::{Parser, Subcommand, ValueEnum};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(
    name = "moltbot-bench",
    about = "Load generator for the moltbot gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Drive concurrent clients for a bounded number of turns.
    Load {
        /// Gateway URL; several, comma-separated, spread the clients over them (replicas).
        #[arg(long, default_value = "http://127.0.0.1:18789")]
        url: String,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Turns per client.
        #[arg(long, default_value_t = 200)]
        turns: usize,
        /// Untimed turns per client before measuring.
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        #[arg(long, value_enum, default_value_t = Mode::Http)]
        mode: Mode,
        /// Start a new session every this many turns (0: one session per client for the
        /// whole run). New sessions per run and per rotation exercise the session cache and
        /// the store the way many users do.
        #[arg(long, default_value_t = 0)]
        session_turns: usize,
        /// Mixed dialogue workloads instead of one short turn at a time: step weights such
        /// as `short:60,long:15,multi:20,batch:5` (with `--mode http`, `ws` or `both`;
        /// `--session-turns` is then the length of a `multi` session, 12 when unset).
        #[arg(long)]
        mix: Option<String>,
        #[arg(long, env = "MOLTBOT_GATEWAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Labelled dialogue workloads on the understand + route path.
    Workload {
        #[arg(long, value_enum)]
        kind: Kind,
        /// Labelled turns, `text<TAB>label` (a `coarse/fine` label is compared on `fine`).
        #[arg(long)]
        data: std::path::PathBuf,
        #[arg(long, default_value = "http://127.0.0.1:18789")]
        url: String,
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Turns in all (a batch request carries `--batch` of them).
        #[arg(long, default_value_t = 2000)]
        turns: usize,
        /// Turns per request for `batch`.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Turns per session for `multi`.
        #[arg(long, default_value_t = 12)]
        session_turns: usize,
        #[arg(long, env = "MOLTBOT_GATEWAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Generation speed over `/v1/chat/completions` (streamed), for this gateway or any
    /// OpenAI-compatible server such as llama.cpp's `llama-server`.
    Generate {
        #[arg(long, value_enum)]
        scenario: generate::Scenario,
        /// Base URL, without `/v1`.
        #[arg(long, default_value = "http://127.0.0.1:18789")]
        url: String,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Requests in all (`throughput`), or timed requests (`prefix`).
        #[arg(long, default_value_t = 16)]
        requests: usize,
        #[arg(long, default_value_t = 64)]
        max_tokens: u32,
        /// Turns per conversation (`multiturn`).
        #[arg(long, default_value_t = 20)]
        turns: usize,
        /// The long system prompt of the `prefix` scenario.
        #[arg(long)]
        system_file: Option<std::path::PathBuf>,
        /// Ask the server not to reuse cached prompt state (llama-server's `cache_prompt`).
        #[arg(long)]
        no_cache_prompt: bool,
        /// Name of the server in the report.
        #[arg(long, default_value = "moltbot")]
        label: String,
        #[arg(long, env = "MOLTBOT_GATEWAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Measure start-up to a healthy `/health` and idle RSS of a gateway command.
    Startup {
        #[arg(long, default_value = "http://127.0.0.1:18789")]
        url: String,
        /// Runs to take the median of.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long)]
        json: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Kind {
    Short,
    Long,
    Multi,
    Batch,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Mode {
    Http,
    Openai,
    Ws,
    /// Half the clients over HTTP, half over the WebSocket.
    Both,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Load {
            url,
            clients,
            turns,
            warmup,
            mode,
            session_turns,
            mix,
            token,
            json,
        } => rt.block_on(load(
            LoadSpec {
                url,
                clients,
                turns,
                warmup,
                sessions: Sessions::new(session_turns),
                mode,
                mix,
                token,
            },
            json,
        )),
        Cmd::Startup {
            url,
            runs,
            json,
            command,
        } => rt.block_on(startup(url, runs, json, command)),
        Cmd::Generate {
            scenario,
            url,
            concurrency,
            requests,
            max_tokens,
            turns,
            system_file,
            no_cache_prompt,
            label,
            token,
            json,
        } => {
            let system = system_file.map(std::fs::read_to_string).transpose()?;
            let spec = generate::GenerateSpec {
                scenario,
                url,
                token,
                concurrency,
                requests,
                max_tokens,
                turns,
                system,
                cache_prompt: !no_cache_prompt,
                label,
            };
            rt.block_on(generate::run(spec, json))
        }
        Cmd::Workload {
            kind,
            data,
            url,
            clients,
            turns,
            batch,
            session_turns,
            token,
            json,
        } => {
            let spec = WorkloadSpec {
                kind,
                url: url.trim_end_matches('/').to_string(),
                clients: clients.max(1),
                turns,
                batch: batch.max(1),
                session_turns: session_turns.max(1),
                token,
            };
            rt.block_on(workload(spec, &data, json))
        }
    }
}

#[derive(Clone)]
struct Target {
    url: String,
    mode: Mode,
    token: Option<String>,
    http: reqwest::Client,
    sessions: Sessions,
}

/// Which session a client's turn `n` belongs to.
#[derive(Clone)]
struct Sessions {
    /// 0: one per client.
    every: usize,
    /// Different in each run, so rotated sessions are always new.
    run: String,
}

impl Sessions {
    fn new(every: usize) -> Self {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Sessions {
            every,
            run: format!("{run:x}"),
        }
    }

    fn id(&self, prefix: &str, client_id: usize, n: usize) -> String {
        match n.checked_div(self.every) {
            None => format!("{prefix}-{client_id}"),
            Some(k) => format!("{prefix}-{}-{client_id}-{k}", self.run),
        }
    }
}

async fn one_turn_http(t: &Target, client_id: usize, n: usize) -> anyhow::Result<()> {
    let (path, body) = match t.mode {
        Mode::Http => (
            "/api/v1/chat",
            json!({"session_id": t.sessions.id("bench", client_id, n), "message": format!("hello {n}")}),
        ),
        _ => (
            "/v1/chat/completions",
            json!({"model": "moltbot", "messages": [{"role": "user", "content": format!("hello {n}")}]}),
        ),
    };
    post_json(&t.http, &t.url, t.token.as_deref(), path, &body).await?;
    Ok(())
}

/// POST `body` to `base` + `path` (with the bearer token, if any); the response body, or an
/// error naming the status when it is not a success.
async fn post_json(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    path: &str,
    body: &Value,
) -> anyhow::Result<bytes::Bytes> {
    let mut req = http.post(format!("{base}{path}")).json(body);
    if let Some(tok) = token {
        req = req.bearer_auth(tok);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    anyhow::ensure!(
        status.is_success(),
        "HTTP {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(bytes)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(t: &Target) -> anyhow::Result<Ws> {
    let url = t.url.replacen("http", "ws", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    // challenge
    ws.next()
        .await
        .ok_or_else(|| anyhow::anyhow!("closed before challenge"))??;
    let connect = json!({"type": "req", "id": "c", "method": "connect", "params": {
        "minProtocol": 4, "maxProtocol": 4,
        "client": {"id": "test", "version": "bench", "platform": "linux", "mode": "test"},
        "auth": {"token": t.token.clone().unwrap_or_default()}}});
    ws.send(Message::text(connect.to_string())).await?;
    loop {
        let v = next_json(&mut ws, "in handshake").await?;
        if v["type"] == "res" {
            anyhow::ensure!(v["ok"] == true, "connect refused: {v}");
            return Ok(ws);
        }
    }
}

/// The next JSON text frame (other frames are skipped); `when` names the moment in the error
/// if the socket closes.
async fn next_json(ws: &mut Ws, when: &str) -> anyhow::Result<Value> {
    loop {
        let msg = ws
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("closed {when}"))??;
        if let Message::Text(txt) = msg {
            return Ok(serde_json::from_str(&txt)?);
        }
    }
}

async fn one_turn_ws(
    ws: &mut Ws,
    sessions: &Sessions,
    client_id: usize,
    n: usize,
) -> anyhow::Result<()> {
    let run = format!("{client_id}-{n}-{}", uuid::Uuid::new_v4());
    let req = json!({"type": "req", "id": run, "method": "chat.send", "params": {
        "sessionKey": sessions.id("bench-ws", client_id, n), "message": format!("hello {n}"),
        "idempotencyKey": run}});
    ws.send(Message::text(req.to_string())).await?;
    loop {
        let v = next_json(ws, "mid-turn").await?;
        if v["type"] == "res" && v["ok"] == false {
            anyhow::bail!("chat.send failed: {v}");
        }
        if v["event"] == "chat" && v["payload"]["runId"] == run.as_str() {
            match v["payload"]["state"].as_str() {
                Some("final") => return Ok(()),
                Some("error" | "aborted") => anyhow::bail!("run failed: {v}"),
                _ => {}
            }
        }
    }
}

/// What `load` drives.
struct LoadSpec {
    url: String,
    clients: usize,
    turns: usize,
    warmup: usize,
    sessions: Sessions,
    mode: Mode,
    mix: Option<String>,
    token: Option<String>,
}

async fn load(spec: LoadSpec, as_json: bool) -> anyhow::Result<()> {
    let LoadSpec {
        url,
        clients,
        turns,
        warmup,
        sessions,
        mode,
        mix,
        token,
    } = spec;
    let mix = match mix {
        Some(m) => {
            anyhow::ensure!(
                mode != Mode::Openai,
                "--mix drives chat sessions: use --mode http, ws or both, not openai"
            );
            Some((mixed::Mix::parse(&m)?, m))
        }
        None => None,
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients.max(1))
        .tcp_nodelay(true)
        .build()?;
    let target = Target {
        url: url.trim_end_matches('/').to_string(),
        mode,
        token,
        http,
        sessions,
    };
    // Warm-up runs inside each client before its timed turns; the wall clock starts after a
    // barrier so connection set-up is not counted.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(clients));
    let started = std::sync::Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut tasks = Vec::new();
    let urls: Vec<String> = target
        .url
        .split(',')
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .collect();
    anyhow::ensure!(!urls.is_empty(), "--url names no gateway");
    let t_session_turns = target.sessions.every;
    let mut mixed_tasks = Vec::new();
    for id in 0..clients {
        let mut t = target.clone();
        t.url = urls[id % urls.len()].clone();
        if t.mode == Mode::Both {
            t.mode = if id % 2 == 0 { Mode::Http } else { Mode::Ws };
        }
        if let Some((m, _)) = &mix {
            let m = m.clone();
            let b = barrier.clone();
            let s = started.clone();
            mixed_tasks.push(tokio::spawn(async move {
                // Connections are set up before the clock starts, as in the plain load.
                let ready = async move {
                    b.wait().await;
                    s.get_or_init(Instant::now);
                };
                let h = mixed::client(t, id, turns, &m, t_session_turns, ready).await?;
                anyhow::Ok((h, Instant::now()))
            }));
            continue;
        }
        let b = barrier.clone();
        let s = started.clone();
        tasks.push(tokio::spawn(async move {
            // Warm-up first, then wait for everyone, then measure.
            let mut ws = if t.mode == Mode::Ws {
                Some(ws_connect(&t).await?)
            } else {
                None
            };
            for n in 0..warmup {
                match ws.as_mut() {
                    Some(ws) => one_turn_ws(ws, &t.sessions, id, n).await?,
                    None => one_turn_http(&t, id, n).await?,
                }
            }
            b.wait().await;
            s.get_or_init(Instant::now);
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            for n in warmup..warmup + turns {
                let start = Instant::now();
                match ws.as_mut() {
                    Some(ws) => one_turn_ws(ws, &t.sessions, id, n).await?,
                    None => one_turn_http(&t, id, n).await?,
                }
                hist.record(start.elapsed().as_micros().max(1) as u64)?;
            }
            anyhow::Ok((hist, Instant::now()))
        }));
    }
    if let Some((_, spec)) = &mix {
        let (mut hists, mut end) = (Vec::new(), None::<Instant>);
        for t in mixed_tasks {
            let (h, done) = t.await??;
            hists.push(h);
            end = Some(end.map_or(done, |e: Instant| e.max(done)));
        }
        let begin = *started
            .get()
            .ok_or_else(|| anyhow::anyhow!("no client started"))?;
        let wall = end.unwrap_or(begin).duration_since(begin).as_secs_f64();
        let report = mixed::report(hists, clients, wall, spec)?;
        if as_json {
            println!("{report}");
        } else {
            println!(
                "{clients} clients, mix {spec}: {:.0} turns/s  p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms",
                report["turns_per_sec"].as_f64().unwrap_or(0.0),
                report["p50_ms"].as_f64().unwrap_or(0.0),
                report["p95_ms"].as_f64().unwrap_or(0.0),
                report["p99_ms"].as_f64().unwrap_or(0.0),
            );
            for r in report["by_kind"].as_array().into_iter().flatten() {
                println!(
                    "  {:<6} {:<4} {:>6} turns  p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms",
                    r["kind"].as_str().unwrap_or(""),
                    r["transport"].as_str().unwrap_or(""),
                    r["turns"],
                    r["p50_ms"].as_f64().unwrap_or(0.0),
                    r["p95_ms"].as_f64().unwrap_or(0.0),
                    r["p99_ms"].as_f64().unwrap_or(0.0),
                );
            }
        }
        return Ok(());
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut end = None::<Instant>;
    for t in tasks {
        let (h, done) = t.await??;
        all.add(&h)?;
        end = Some(end.map_or(done, |e: Instant| e.max(done)));
    }
    let begin = *started
        .get()
        .ok_or_else(|| anyhow::anyhow!("no client started"))?;
    let wall = end.unwrap_or(begin).duration_since(begin).as_secs_f64();
    let total = (clients * turns) as f64;
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    let report = json!({
        "mode": match mode {
            Mode::Http => "http", Mode::Openai => "openai", Mode::Ws => "ws", Mode::Both => "both",
        },
        "clients": clients, "turns": total, "seconds": wall,
        "turns_per_sec": total / wall,
        "p50_ms": ms(0.5), "p95_ms": ms(0.95), "p99_ms": ms(0.99), "max_ms": all.max() as f64 / 1000.0,
    });
    if as_json {
        println!("{report}");
    } else {
        println!(
            "{} clients x {} turns ({}): {:.0} turns/s  p50 {:.3} ms  p95 {:.3} ms  p99 {:.3} ms",
            clients,
            turns,
            report["mode"].as_str().unwrap_or(""),
            total / wall,
            ms(0.5),
            ms(0.95),
            ms(0.99)
        );
    }
    Ok(())
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn startup(
    url: String,
    runs: usize,
    as_json: bool,
    command: Vec<String>,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()?;
    let health = format!("{}/health", url.trim_end_matches('/'));
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let deadline = started + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(&health).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "gateway not healthy within 30 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(started.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(pid) = child.id() {
            rss.push(rss_kb(pid).unwrap_or(0) as f64 / 1024.0);
        }
        child.start_kill()?;
        child.wait().await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    times.sort_by(f64::total_cmp);
    rss.sort_by(f64::total_cmp);
    let med = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(0.0);
    let report = json!({"startup_ms_median": med(&times), "startup_ms_min": times.first(),
        "startup_ms_max": times.last(), "idle_rss_mb_median": med(&rss), "runs": times.len()});
    if as_json {
        println!("{report}");
    } else {
        println!(
            "start-up to healthy: median {:.1} ms (min {:.1}, max {:.1}); idle RSS median {:.1} MB",
            med(&times),
            times[0],
            times[times.len() - 1],
            med(&rss)
        );
    }
    Ok(())
}

/// Neutral sentences for the `long` workload (shared with the `long_text` example).
const FILLER_TEXT: &str = include_str!("../../../../../bench/intents/filler.txt");

struct WorkloadSpec {
    kind: Kind,
    url: String,
    clients: usize,
    turns: usize,
    batch: usize,
    session_turns: usize,
    token: Option<String>,
}

/// SplitMix64, enough to pick turns and filler reproducibly without another dependency.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `(text, fine label)` pairs from a `text<TAB>label` file (header optional).
fn labelled(path: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let rows: Vec<(String, String)> = raw
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(t, l)| {
            let header = *t == "text" && *l == "label";
            !header && !t.trim().is_empty()
        })
        .map(|(t, l)| {
            let fine = l.rsplit('/').next().unwrap_or(l).trim().to_string();
            (t.trim().to_string(), fine)
        })
        .collect();
    anyhow::ensure!(
        !rows.is_empty(),
        "{} holds no text<TAB>label rows",
        path.display()
    );
    Ok(rows)
}

/// The turn's text buried after the first ~64 words of 12–17 filler sentences.
fn bury(text: &str, seed: u64) -> String {
    let filler: Vec<&str> = FILLER_TEXT
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let n = 12 + (mix(seed) % 6) as usize;
    let mut sentences: Vec<String> = (0..n)
        .map(|i| {
            filler[(mix(seed ^ (i as u64 + 1) << 8) % filler.len() as u64) as usize].to_string()
        })
        .collect();
    let at = 8 + (mix(seed ^ 0xabc) % (n as u64 - 8)) as usize;
    let mut t = text.trim().to_string();
    if !t.ends_with(['.', '?', '!']) {
        t.push('.');
    }
    sentences.insert(at, t);
    sentences.join(" ")
}

async fn post(
    http: &reqwest::Client,
    spec: &WorkloadSpec,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let bytes = post_json(http, &spec.url, spec.token.as_deref(), path, &body).await?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// One request of the workload: the turns it carries (index into the data) and how many of
/// them were classified right.
async fn workload_request(
    http: &reqwest::Client,
    spec: &WorkloadSpec,
    data: &[(String, String)],
    picks: &[usize],
    session: &str,
    seed: u64,
) -> anyhow::Result<usize> {
    let right = |v: &Value, i: usize| usize::from(v.as_str() == Some(data[i].1.as_str()));
    match spec.kind {
        Kind::Short | Kind::Long => {
            let i = picks[0];
            let text = if spec.kind == Kind::Long {
                bury(&data[i].0, seed)
            } else {
                data[i].0.clone()
            };
            let v = post(http, spec, "/api/v1/understand", json!({ "text": text })).await?;
            Ok(right(&v["fine"], i))
        }
        Kind::Batch => {
            let texts: Vec<&str> = picks.iter().map(|i| data[*i].0.as_str()).collect();
            let v = post(http, spec, "/api/v1/understand", json!({ "texts": texts })).await?;
            let results = v["results"].as_array().cloned().unwrap_or_default();
            anyhow::ensure!(
                results.len() == picks.len(),
                "batch answered {} of {}",
                results.len(),
                picks.len()
            );
            Ok(picks
                .iter()
                .zip(&results)
                .map(|(i, r)| right(&r["fine"], *i))
                .sum())
        }
        Kind::Multi => {
            let i = picks[0];
            let v = post(
                http,
                spec,
                "/api/v1/chat",
                json!({ "session_id": session, "message": data[i].0 }),
            )
            .await?;
            Ok(right(&v["route"]["intent"], i))
        }
    }
}

async fn workload(spec: WorkloadSpec, data: &std::path::Path, as_json: bool) -> anyhow::Result<()> {
    let data = std::sync::Arc::new(labelled(data)?);
    let spec = std::sync::Arc::new(spec);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(spec.clients)
        .tcp_nodelay(true)
        .build()?;
    let per_request = if spec.kind == Kind::Batch {
        spec.batch
    } else {
        1
    };
    let requests = spec.turns.div_ceil(per_request).max(spec.clients);
    let per_client = requests.div_ceil(spec.clients);
    let run_id = std::process::id();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..spec.clients {
        let (http, spec, data) = (http.clone(), spec.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            let (mut turns, mut right) = (0usize, 0usize);
            for r in 0..per_client {
                let seed = ((c as u64) << 32) | r as u64;
                let picks: Vec<usize> = (0..per_request)
                    .map(|k| (mix(seed ^ ((k as u64) << 48)) % data.len() as u64) as usize)
                    .collect();
                let session = format!("wl-{run_id}-{c}-{}", r / spec.session_turns);
                let t0 = Instant::now();
                right += workload_request(&http, &spec, &data, &picks, &session, seed).await?;
                hist.record(t0.elapsed().as_micros().max(1) as u64)?;
                turns += picks.len();
            }
            anyhow::Ok((hist, turns, right))
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut turns, mut right) = (0usize, 0usize);
    for t in tasks {
        let (h, n, ok) = t.await??;
        all.add(&h)?;
        turns += n;
        right += ok;
    }
    let wall = started.elapsed().as_secs_f64();
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    let kind = format!("{:?}", spec.kind).to_lowercase();
    let report = json!({
        "workload": kind, "clients": spec.clients, "turns": turns,
        "requests": all.len(), "turns_per_request": per_request, "seconds": wall,
        "qps": turns as f64 / wall, "p50_ms": ms(0.5), "p95_ms": ms(0.95), "p99_ms": ms(0.99),
        "accuracy": right as f64 / turns.max(1) as f64,
    });
    if as_json {
        println!("{report}");
    } else {
        println!(
            "{kind}: {} clients, {turns} turns in {} requests: {:.0} turns/s  p50 {:.1} ms  p95 {:.1} ms  accuracy {:.4}",
            spec.clients,
            all.len(),
            turns as f64 / wall,
            ms(0.5),
            ms(0.95),
            right as f64 / turns.max(1) as f64
        );
    }
    Ok(())
}
