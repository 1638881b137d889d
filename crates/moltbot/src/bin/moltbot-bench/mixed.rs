//! `load --mix`: the four dialogue workloads mixed in one chat load, over HTTP, the OpenClaw
//! WebSocket or both (half the clients each), against one gateway or several replicas.
//!
//! Each client repeats steps until it has run its turns; a step is drawn by weight from:
//! - `short`: one short message in a new session;
//! - `long`: one message of 150–250 words (long context) in a new session;
//! - `multi`: a whole new session of `--session-turns` turns (12 when unset) back to back, so
//!   the later turns carry a growing history;
//! - `batch`: `BATCH` turns of different sessions submitted together (concurrent requests
//!   over HTTP, back-to-back `chat.send` frames on the one socket over WS), each timed from
//!   its own send to its own answer.
//!
//! Latency is kept per kind and per transport, so a slow kind is not hidden in the total.

use super::{bury, mix, next_json, post_json, ws_connect, Mode, Target, Ws};
use futures::SinkExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Turns submitted together by a `batch` step.
const BATCH: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Short,
    Long,
    Multi,
    Batch,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Short, Kind::Long, Kind::Multi, Kind::Batch];

    fn name(self) -> &'static str {
        match self {
            Kind::Short => "short",
            Kind::Long => "long",
            Kind::Multi => "multi",
            Kind::Batch => "batch",
        }
    }
}

/// Step weights, parsed from `short:60,long:15,multi:20,batch:5`.
#[derive(Clone, Debug)]
pub struct Mix {
    weights: Vec<(Kind, u64)>,
    total: u64,
}

impl Mix {
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let mut weights = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part.split_once(':').ok_or_else(|| {
                anyhow::anyhow!("--mix: '{part}' is not KIND:WEIGHT (e.g. short:60)")
            })?;
            let kind = Kind::ALL
                .into_iter()
                .find(|k| k.name() == name.trim())
                .ok_or_else(|| {
                    anyhow::anyhow!("--mix: unknown kind '{name}' (short, long, multi, batch)")
                })?;
            let w: u64 = w.trim().parse().map_err(|_| {
                anyhow::anyhow!("--mix: weight of {name} is not a whole number: '{w}'")
            })?;
            weights.push((kind, w));
        }
        let total = weights.iter().map(|(_, w)| w).sum();
        anyhow::ensure!(total > 0, "--mix: the weights add up to 0 in '{spec}'");
        Ok(Mix { weights, total })
    }

    fn pick(&self, seed: u64) -> Kind {
        let mut r = mix(seed) % self.total;
        for (k, w) in &self.weights {
            if r < *w {
                return *k;
            }
            r -= w;
        }
        self.weights[0].0
    }
}

/// Latency histograms by `(kind, transport)`.
type Hists = BTreeMap<(Kind, &'static str), Histogram<u64>>;

fn record(
    h: &mut Hists,
    kind: Kind,
    transport: &'static str,
    start: Instant,
) -> anyhow::Result<()> {
    let hist = match h.entry((kind, transport)) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(Histogram::new_with_bounds(1, 600_000_000, 3)?)
        }
    };
    hist.record(start.elapsed().as_micros().max(1) as u64)?;
    Ok(())
}

/// One client's connection: HTTP requests or its own WebSocket.
enum Conn {
    Http(Target),
    Ws(Box<Ws>),
}

impl Conn {
    fn transport(&self) -> &'static str {
        match self {
            Conn::Http(_) => "http",
            Conn::Ws(_) => "ws",
        }
    }

    /// Run `turns` (session, message) together; each turn's latency goes to `h` as `kind`.
    async fn run(
        &mut self,
        turns: Vec<(String, String)>,
        kind: Kind,
        h: &mut Hists,
    ) -> anyhow::Result<()> {
        let transport = self.transport();
        match self {
            Conn::Http(t) => {
                let t = &*t;
                let results =
                    futures::future::join_all(turns.into_iter().map(|(s, m)| async move {
                        let start = Instant::now();
                        let body = json!({"session_id": s, "message": m});
                        post_json(&t.http, &t.url, t.token.as_deref(), "/api/v1/chat", &body)
                            .await?;
                        anyhow::Ok(start)
                    }))
                    .await;
                for r in results {
                    record(h, kind, transport, r?)?;
                }
            }
            Conn::Ws(ws) => {
                let mut pending = BTreeMap::new();
                for (s, m) in turns {
                    let run = uuid::Uuid::new_v4().to_string();
                    let req = json!({"type": "req", "id": run, "method": "chat.send", "params": {
                        "sessionKey": s, "message": m, "idempotencyKey": run}});
                    pending.insert(run, Instant::now());
                    ws.send(Message::text(req.to_string())).await?;
                }
                while !pending.is_empty() {
                    let v: Value = next_json(ws, "mid-turn").await?;
                    if v["type"] == "res" && v["ok"] == false {
                        anyhow::bail!("chat.send failed: {v}");
                    }
                    if v["event"] != "chat" {
                        continue;
                    }
                    let Some(run) = v["payload"]["runId"].as_str() else {
                        continue;
                    };
                    match v["payload"]["state"].as_str() {
                        Some("final") => {
                            if let Some(start) = pending.remove(run) {
                                record(h, kind, transport, start)?;
                            }
                        }
                        Some("error" | "aborted") if pending.contains_key(run) => {
                            anyhow::bail!("run failed: {v}")
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// One client of a mixed load: connects, waits for `ready`, then steps until `turns` turns
/// are done; its histograms.
pub async fn client(
    t: Target,
    id: usize,
    turns: usize,
    mix_of: &Mix,
    session_turns: usize,
    ready: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Hists> {
    let mut conn = match t.mode {
        Mode::Ws => Conn::Ws(Box::new(ws_connect(&t).await?)),
        _ => Conn::Http(t.clone()),
    };
    ready.await;
    let run = &t.sessions.run;
    let session_turns = if session_turns == 0 {
        12
    } else {
        session_turns
    };
    let mut h = Hists::new();
    let (mut done, mut step) = (0usize, 0u64);
    while done < turns {
        let seed = ((id as u64) << 40) ^ step;
        let kind = mix_of.pick(seed);
        let session = |k: usize| format!("mix-{run}-{id}-{step}-{k}");
        match kind {
            Kind::Short => {
                let turn = vec![(session(0), format!("hello {step}"))];
                conn.run(turn, kind, &mut h).await?;
                done += 1;
            }
            Kind::Long => {
                let text = bury(&format!("what did I ask in step {step}?"), seed);
                conn.run(vec![(session(0), text)], kind, &mut h).await?;
                done += 1;
            }
            Kind::Multi => {
                for n in 0..session_turns {
                    let turn = vec![(session(0), format!("turn {n} of a longer chat"))];
                    conn.run(turn, kind, &mut h).await?;
                }
                done += session_turns;
            }
            Kind::Batch => {
                let turns = (0..BATCH)
                    .map(|k| (session(k), format!("batched {k}")))
                    .collect();
                conn.run(turns, kind, &mut h).await?;
                done += BATCH;
            }
        }
        step += 1;
    }
    Ok(h)
}

/// Merge the clients' histograms and build the report: totals plus one row per kind and
/// transport.
pub fn report(all: Vec<Hists>, clients: usize, wall: f64, mix_spec: &str) -> anyhow::Result<Value> {
    let mut merged = Hists::new();
    let mut total = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for h in all {
        for (key, hist) in h {
            total.add(&hist)?;
            match merged.entry(key) {
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().add(&hist)?,
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(hist);
                }
            }
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let rows: Vec<Value> = merged
        .iter()
        .map(|((kind, transport), h)| {
            json!({"kind": kind.name(), "transport": transport, "turns": h.len(),
                "p50_ms": ms(h, 0.5), "p95_ms": ms(h, 0.95), "p99_ms": ms(h, 0.99)})
        })
        .collect();
    let turns = total.len() as f64;
    Ok(json!({
        "mode": "mix", "mix": mix_spec, "clients": clients, "turns": turns, "seconds": wall,
        "turns_per_sec": turns / wall, "p50_ms": ms(&total, 0.5), "p95_ms": ms(&total, 0.95),
        "p99_ms": ms(&total, 0.99), "max_ms": total.max() as f64 / 1000.0, "by_kind": rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_pick_kinds_in_proportion() {
        let m = Mix::parse("short:60, long:15,multi:20,batch:5").unwrap();
        let mut counts = BTreeMap::new();
        for s in 0..20_000u64 {
            *counts.entry(m.pick(s)).or_insert(0usize) += 1;
        }
        let share = |k| counts[&k] as f64 / 20_000.0;
        assert!((share(Kind::Short) - 0.60).abs() < 0.02, "{counts:?}");
        assert!((share(Kind::Long) - 0.15).abs() < 0.02, "{counts:?}");
        assert!((share(Kind::Multi) - 0.20).abs() < 0.02, "{counts:?}");
        assert!((share(Kind::Batch) - 0.05).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn bad_mixes_name_the_part() {
        let err = |s| Mix::parse(s).unwrap_err().to_string();
        assert!(err("short").contains("'short' is not KIND:WEIGHT"));
        assert!(err("tiny:3").contains("unknown kind 'tiny'"));
        assert!(err("long:x").contains("weight of long"));
        assert!(err("short:0").contains("add up to 0"));
        // A kind left out never comes up.
        let m = Mix::parse("batch:1").unwrap();
        assert!((0..1000).all(|s| m.pick(s) == Kind::Batch));
    }
}
