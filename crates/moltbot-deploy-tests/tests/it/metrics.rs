//! The dashboard and the alert rules may only name metrics the gateway really exports:
//! checked against the `/metrics` text of a real in-process gateway (fake OpenAI model on
//! loopback) after a few requests, and, for series that only appear once their event has
//! happened (errors of every kind, tool calls, local-model KV reuse), against the metric
//! names declared in the crates' sources.

use moltbot_core::{Config, Secret};
use moltbot_engine::{Engine, EngineOptions, ModelSlot};
use moltbot_fakes::FakeOpenAi;
use moltbot_gateway::AppState;
use moltbot_models::providers::openai::OpenAiProvider;
use moltbot_store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const TOKEN: &str = "deploy-test-token";

/// Names queried by the dashboard or the alerts that do not come from the gateway's own
/// metrics. Keep this list short and say where each one comes from.
const FROM_ELSEWHERE: &[(&str, &str)] = &[("up", "set by Prometheus for every scrape target")];

/// Series the dashboard's main panels need, which must appear after plain chat traffic.
const MUST_BE_LIVE: &[&str] = &[
    "moltbot_http_requests_total",
    "moltbot_http_request_duration_bucket",
    "moltbot_inference_latency_bucket",
    "moltbot_time_to_first_token_bucket",
    "moltbot_concurrent_users",
    "moltbot_error_rate",
    "moltbot_errors_total",
    "moltbot_uptime_seconds",
    "process_resident_memory_bytes",
];

/// `/metrics` of a gateway that answered a chat turn, a streamed turn and an unauthorised
/// request.
async fn live_metrics() -> String {
    let fake = FakeOpenAi::builder().start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.gateway.token = Some(Secret::new(TOKEN.to_owned()));
    cfg.data.dir = Some(dir.path().to_path_buf());
    cfg.model.openai.base_url = fake.base_url();
    cfg.model.openai.model = "fake-model".into();
    cfg.model.openai.max_retries = 0;
    let store = Store::open(&dir.path().join("moltbot.db")).unwrap();
    let model = OpenAiProvider::new(&cfg.model.openai).unwrap();
    let engine = Engine::new(
        store,
        ModelSlot::ready(Arc::new(model)),
        EngineOptions::default(),
    );
    let state = AppState::new(engine, cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(moltbot_gateway::run(listener, state, async move {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let chat = |stream: bool| {
        http.post(format!("{base}/api/v1/chat"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"message": "hello there", "stream": stream}))
            .send()
    };
    let resp = chat(false).await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = chat(true).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    let resp = http
        .get(format!("{base}/api/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    text
}

/// Metric names of the series in Prometheus text format, each with the label names its
/// series carry.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_owned()).or_default();
        let Some(body) = line[name_end..].strip_prefix('{') else {
            continue;
        };
        // name="value",… with escapes inside the values; stop at the closing brace.
        let mut chars = body.chars();
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '=' => {
                    labels.insert(std::mem::take(&mut label));
                    chars.next(); // the opening quote
                    while let Some(v) = chars.next() {
                        match v {
                            '\\' => {
                                chars.next();
                            }
                            '"' => break,
                            _ => {}
                        }
                    }
                }
                ',' => {}
                '}' => break,
                c => label.push(c),
            }
        }
    }
    out
}

/// Every `"moltbot_…"` string literal in the crates' sources: the names the code records
/// or describes, with the histogram series suffixes.
fn declared() -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let src = std::fs::read_to_string(&path).unwrap();
                for piece in src.split("\"moltbot_").skip(1) {
                    let name: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if piece[name.len()..].starts_with('"') {
                        out.insert(format!("moltbot_{name}"));
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    for krate in std::fs::read_dir(crate::repo().join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            walk(&src, &mut out);
        }
    }
    let suffixed: Vec<String> = out
        .iter()
        .flat_map(|n| ["_bucket", "_sum", "_count"].map(|s| format!("{n}{s}")))
        .collect();
    out.extend(suffixed);
    out
}

/// What a PromQL expression reads: metric names (identifiers outside label matchers, range
/// selectors, strings and `by`/`without` lists, that are not function calls or keywords)
/// and label names (in matchers and in `by`/`without`/`on`/`ignoring` lists).
#[derive(Debug, Default)]
struct Reads {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

fn reads(expr: &str) -> Reads {
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Operators, and aggregations (which may put `by (…)` before their parenthesis).
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    // Blank out {…}, […] and "…" so only the expression's skeleton is left.
    let mut out = Reads::default();
    let mut skeleton = String::new();
    let mut close: Option<char> = None;
    let mut in_string = false;
    let mut matcher = String::new();
    for c in expr.chars() {
        match (close, c) {
            (None, '{') => close = Some('}'),
            (None, '[') => close = Some(']'),
            (None, '"') => close = Some('"'),
            // Label names in a matcher: what stands before each `=`, `!=`, `=~`, `!~`.
            (Some('}'), '"') => in_string = !in_string,
            (Some('}'), _) if in_string => {}
            (Some('}'), '=' | '!' | '~' | ',') => {
                if !matcher.trim().is_empty() {
                    out.labels.insert(matcher.trim().to_owned());
                }
                matcher.clear();
            }
            (Some(end), c) if c == end => {
                close = None;
                matcher.clear();
                skeleton.push(' ');
            }
            (Some('}'), c) => matcher.push(c),
            (Some(_), _) => {}
            (None, c) => skeleton.push(c),
        }
    }
    // Tokens: identifiers (with whether a digit, '.' or '$' is glued before them, as in
    // `1e9` or `$job`) and single punctuation characters.
    let mut tokens: Vec<(String, bool)> = Vec::new();
    let mut prev = ' ';
    let mut chars = skeleton.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_alphabetic() || c == '_' {
            let mut word = String::from(c);
            while let Some(&n) = chars.peek() {
                if !(n.is_ascii_alphanumeric() || n == '_' || n == ':') {
                    break;
                }
                word.push(n);
                chars.next();
            }
            let glued = prev.is_ascii_digit() || prev == '.' || prev == '$';
            tokens.push((word, glued));
            prev = 'x';
        } else {
            if !c.is_whitespace() {
                tokens.push((c.to_string(), false));
            }
            prev = c;
        }
    }
    let mut i = 0;
    while i < tokens.len() {
        let (word, glued) = &tokens[i];
        let next_is_paren = tokens.get(i + 1).is_some_and(|(t, _)| t == "(");
        i += 1;
        if !(word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')) || *glued {
            continue;
        }
        if GROUPING.contains(&word.as_str()) && next_is_paren {
            // The label list `(a, b)`.
            while i < tokens.len() && tokens[i].0 != ")" {
                let t = &tokens[i].0;
                if t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                    out.labels.insert(t.clone());
                }
                i += 1;
            }
            continue;
        }
        if next_is_paren || KEYWORDS.contains(&word.as_str()) {
            continue; // a function call or an operator keyword
        }
        out.metrics.insert(word.clone());
    }
    out
}

#[test]
fn promql_names_are_found() {
    let e =
        "sum by (le, route) (rate(moltbot_a_bucket{job=~\"$job\", x=\"y z\"}[$__rate_interval])) \
             / scalar(sum(rate(moltbot_b{}[5m]))) > 1.5 * 1e9 and on (instance) up == 0";
    let r = reads(e);
    let names: Vec<&String> = r.metrics.iter().collect();
    assert_eq!(names, ["moltbot_a_bucket", "moltbot_b", "up"]);
    let labels: Vec<&String> = r.labels.iter().collect();
    assert_eq!(labels, ["instance", "job", "le", "route", "x"]);
}

/// (where, expr) of every query in the dashboard (panels and template variables) and the
/// alert rules.
fn queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dash: serde_json::Value =
        serde_json::from_str(&crate::read("deploy/grafana/moltbot.json")).unwrap();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 7, "{} panels", panels.len());
    for p in panels {
        let title = p["title"].as_str().unwrap();
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            out.push((
                format!("panel {title}"),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        let q = v["query"].as_str().unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.rsplit_once(','))
            .map_or(q, |(m, _)| m);
        out.push((format!("variable {}", v["name"]), inner.to_owned()));
    }
    let alerts: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&crate::read("deploy/prometheus/alerts.yml")).unwrap();
    for g in alerts["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            out.push((
                format!("alert {}", r["alert"].as_str().unwrap()),
                r["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn dashboard_and_alerts_use_only_exported_metrics() {
    let live = exported(&live_metrics().await);
    for name in MUST_BE_LIVE {
        assert!(
            live.contains_key(*name),
            "{name} missing from /metrics:\n{live:?}"
        );
    }
    let declared = declared();
    let mut used = BTreeSet::new();
    for (place, expr) in queries() {
        let r = reads(&expr);
        assert!(!r.metrics.is_empty(), "{place}: no metric in {expr}");
        for name in &r.metrics {
            let known = live.contains_key(name)
                || declared.contains(name)
                || FROM_ELSEWHERE.iter().any(|(n, _)| n == name);
            assert!(
                known,
                "{place}: `{name}` is not exported by the gateway ({expr})"
            );
            used.insert(name.clone());
        }
        // Labels, where the series are live: each one the query names is on one of them
        // (`job` and `instance` are added by Prometheus).
        let live_labels: BTreeSet<&String> = r
            .metrics
            .iter()
            .filter_map(|m| live.get(m))
            .flatten()
            .collect();
        if live_labels.is_empty() {
            continue;
        }
        for label in r
            .labels
            .iter()
            .filter(|l| !["job", "instance"].contains(&l.as_str()))
        {
            assert!(
                live_labels.contains(label),
                "{place}: no series of {:?} has the label `{label}` ({expr})",
                r.metrics
            );
        }
    }
    // The panels the deployment docs promise.
    for name in [
        "moltbot_http_requests_total",
        "moltbot_inference_latency_bucket",
        "moltbot_concurrent_users",
        "moltbot_local_kv_cache_total",
        "moltbot_errors_total",
        "moltbot_tool_calls_total",
        "moltbot_error_rate",
        "up",
    ] {
        assert!(used.contains(name), "nothing queries {name}");
    }
}
