//! `moltbot-bench generate`: generation benchmarks over the streamed OpenAI chat API, so the
//! same client measures this gateway on its local model and llama.cpp's own `llama-server`
//! serving the same GGUF file.
//!
//! Scenarios:
//! - `throughput`: `--concurrency` clients share `--requests` requests, each a different
//!   long-answer prompt cut at `--max-tokens`; generated tokens/s, requests/s, latency and
//!   time to first token.
//! - `prefix`: one client, every request the same long system prompt (`--system-file`) and a
//!   different question; time to first token. Run once against a server that reuses KV
//!   state and once against one that does not (`--no-cache-prompt` asks llama-server not to).
//! - `multiturn`: `--concurrency` conversations of `--turns` turns each, the full history sent
//!   every turn as a stateless client does; latency at the first and the last turn.
//!
//! Decoding is greedy with the repetition penalty off for both servers (`repetition_penalty`
//! is ours, `repeat_penalty` llama-server's; each ignores the other's).

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq, Debug)]
pub enum Scenario {
    Throughput,
    Prefix,
    Multiturn,
}

pub struct GenerateSpec {
    pub scenario: Scenario,
    /// Base URL without `/v1`.
    pub url: String,
    pub token: Option<String>,
    pub concurrency: usize,
    pub requests: usize,
    pub max_tokens: u32,
    pub turns: usize,
    pub system: Option<String>,
    pub cache_prompt: bool,
    /// A name for this run in the report (e.g. `moltbot` or `llama-server`).
    pub label: String,
}

const TOPICS: [&str; 16] = [
    "a lighthouse keeper",
    "the history of bread",
    "a journey to Mars",
    "how rivers shape valleys",
    "a robot learning to paint",
    "the life of honey bees",
    "a city under the sea",
    "the first computers",
    "a winter in the mountains",
    "a detective and a missing cat",
    "how volcanoes form",
    "a library that never closes",
    "the migration of birds",
    "a chess tournament",
    "an old clockmaker",
    "the invention of paper",
];

const QUESTIONS: [&str; 12] = [
    "What should I bring on a day hike?",
    "How do I keep basil alive indoors?",
    "What is a good name for a grey cat?",
    "How long should I boil an egg?",
    "Why is the sky blue?",
    "How can I sleep better?",
    "What is the capital of Italy?",
    "How do I start learning to code?",
    "What is a healthy breakfast?",
    "How do plants make food?",
    "What is the tallest mountain?",
    "How do I clean a cast iron pan?",
];

/// What one streamed request took.
struct Timing {
    ttft: Duration,
    total: Duration,
    tokens: u64,
    text: String,
}

struct Client {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    cache_prompt: bool,
}

impl Client {
    async fn chat(&self, messages: Vec<Value>, max_tokens: u32) -> anyhow::Result<Timing> {
        let body = json!({
            "model": "bench",
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "repetition_penalty": 1.0,
            "repeat_penalty": 1.0,
            "cache_prompt": self.cache_prompt,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let mut req = self
            .http
            .post(format!("{}/v1/chat/completions", self.url))
            .json(&body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let start = Instant::now();
        let mut resp = req.send().await?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            anyhow::bail!("HTTP {status}: {text}");
        }
        let mut ttft = None;
        let mut pieces = 0u64;
        let mut usage_tokens = None;
        let mut text = String::new();
        let mut buf = Vec::<u8>::new();
        while let Some(bytes) = resp.chunk().await? {
            buf.extend_from_slice(&bytes);
            while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim().strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    continue;
                }
                let Ok(event) = serde_json::from_str::<Value>(data) else {
                    continue;
                };
                if let Some(piece) = event["choices"][0]["delta"]["content"].as_str() {
                    if !piece.is_empty() {
                        ttft.get_or_insert_with(|| start.elapsed());
                        pieces += 1;
                        text.push_str(piece);
                    }
                }
                if let Some(n) = event["usage"]["completion_tokens"].as_u64() {
                    usage_tokens = Some(n);
                }
            }
        }
        let total = start.elapsed();
        Ok(Timing {
            ttft: ttft.unwrap_or(total),
            total,
            tokens: usage_tokens.unwrap_or(pieces),
            text,
        })
    }
}

fn hist() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub async fn run(spec: GenerateSpec, as_json: bool) -> anyhow::Result<()> {
    let client = Arc::new(Client {
        // A fresh connection per request (a fraction of a millisecond on loopback, against
        // requests of many milliseconds): llama-server closes idle keep-alive connections,
        // which a pool would then trip over.
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .tcp_nodelay(true)
            .build()?,
        url: spec.url.trim_end_matches('/').to_string(),
        token: spec.token.clone(),
        cache_prompt: spec.cache_prompt,
    });
    let report = match spec.scenario {
        Scenario::Throughput => throughput(&spec, client).await?,
        Scenario::Prefix => prefix(&spec, client).await?,
        Scenario::Multiturn => multiturn(&spec, client).await?,
    };
    if as_json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn story(i: usize) -> Vec<Value> {
    let topic = TOPICS[i % TOPICS.len()];
    vec![json!({"role": "user", "content": format!("Write a long, detailed story about {topic}.")})]
}

async fn throughput(spec: &GenerateSpec, client: Arc<Client>) -> anyhow::Result<Value> {
    let clients = spec.concurrency.max(1);
    // One untimed request per client: connections, and the server's first allocations.
    let warm: Vec<_> = (0..clients)
        .map(|i| {
            let c = client.clone();
            let max = spec.max_tokens.min(8);
            tokio::spawn(async move { c.chat(story(i), max).await })
        })
        .collect();
    for w in warm {
        w.await??;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let total = spec.requests.max(clients);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let c = client.clone();
        let next = next.clone();
        let max_tokens = spec.max_tokens;
        tasks.push(tokio::spawn(async move {
            let mut lat = hist()?;
            let mut ttft = hist()?;
            let mut tokens = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = c.chat(story(i), max_tokens).await?;
                lat.record(t.total.as_micros().max(1) as u64)?;
                ttft.record(t.ttft.as_micros().max(1) as u64)?;
                tokens += t.tokens;
            }
            anyhow::Ok((lat, ttft, tokens))
        }));
    }
    let mut lat = hist()?;
    let mut ttft = hist()?;
    let mut tokens = 0;
    for t in tasks {
        let (l, f, n) = t.await??;
        lat.add(&l)?;
        ttft.add(&f)?;
        tokens += n;
    }
    let wall = started.elapsed().as_secs_f64();
    Ok(json!({
        "scenario": "throughput", "server": spec.label, "concurrency": clients,
        "requests": total, "max_tokens": spec.max_tokens, "seconds": wall,
        "generated_tokens": tokens, "tokens_per_sec": tokens as f64 / wall,
        "requests_per_sec": total as f64 / wall,
        "p50_ms": ms(&lat, 0.5), "p95_ms": ms(&lat, 0.95),
        "ttft_p50_ms": ms(&ttft, 0.5), "ttft_p95_ms": ms(&ttft, 0.95),
    }))
}

async fn prefix(spec: &GenerateSpec, client: Arc<Client>) -> anyhow::Result<Value> {
    let system = spec
        .system
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--system-file is needed for the prefix scenario"))?;
    let ask = |i: usize| {
        vec![
            json!({"role": "system", "content": system}),
            json!({"role": "user", "content": QUESTIONS[i % QUESTIONS.len()]}),
        ]
    };
    // The first request fills the cache (when there is one); it is reported on its own.
    let first = client.chat(ask(QUESTIONS.len() - 1), 2).await?;
    let mut ttft = hist()?;
    let n = spec.requests.max(1);
    for i in 0..n {
        let t = client.chat(ask(i), 2).await?;
        ttft.record(t.ttft.as_micros().max(1) as u64)?;
    }
    Ok(json!({
        "scenario": "prefix", "server": spec.label, "cache_prompt": spec.cache_prompt,
        "system_chars": system.len(), "requests": n,
        "first_ttft_ms": first.ttft.as_secs_f64() * 1e3,
        "ttft_p50_ms": ms(&ttft, 0.5), "ttft_p95_ms": ms(&ttft, 0.95),
    }))
}

async fn multiturn(spec: &GenerateSpec, client: Arc<Client>) -> anyhow::Result<Value> {
    let turns = spec.turns.max(1);
    let conversations = spec.concurrency.max(1);
    let mut tasks = Vec::new();
    for c in 0..conversations {
        let client = client.clone();
        let max_tokens = spec.max_tokens;
        tasks.push(tokio::spawn(async move {
            let mut messages = vec![json!({"role": "system",
                "content": "You are a helpful assistant. Answer briefly."})];
            let mut per_turn = Vec::with_capacity(turns);
            for t in 0..turns {
                let q = QUESTIONS[(c * 5 + t) % QUESTIONS.len()];
                messages.push(json!({"role": "user", "content": format!("({}) {q}", t + 1)}));
                let timing = client.chat(messages.clone(), max_tokens).await?;
                messages.push(json!({"role": "assistant", "content": timing.text}));
                per_turn.push((timing.ttft, timing.total));
            }
            anyhow::Ok(per_turn)
        }));
    }
    let mut first = hist()?;
    let mut last = hist()?;
    let mut last_ttft = hist()?;
    let mut first_ttft = hist()?;
    for t in tasks {
        let per_turn = t.await??;
        if let (Some(f), Some(l)) = (per_turn.first(), per_turn.last()) {
            first.record(f.1.as_micros().max(1) as u64)?;
            first_ttft.record(f.0.as_micros().max(1) as u64)?;
            last.record(l.1.as_micros().max(1) as u64)?;
            last_ttft.record(l.0.as_micros().max(1) as u64)?;
        }
    }
    Ok(json!({
        "scenario": "multiturn", "server": spec.label, "cache_prompt": spec.cache_prompt,
        "conversations": conversations, "turns": turns, "max_tokens": spec.max_tokens,
        "turn1_ttft_ms": ms(&first_ttft, 0.5), "turn1_ms": ms(&first, 0.5),
        "last_turn_ttft_ms": ms(&last_ttft, 0.5), "last_turn_ms": ms(&last, 0.5),
        "last_turn_ttft_max_ms": last_ttft.max() as f64 / 1000.0,
    }))
}
