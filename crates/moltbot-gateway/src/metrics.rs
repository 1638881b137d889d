//! Prometheus metrics: one recorder per process, and the HTTP middleware that counts and
//! times requests by route template (never by raw path, which could hold ids).

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;

const LATENCY_BUCKETS_MS: &[f64] = &[10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
const HTTP_BUCKETS_MS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Refresh the `process_*` gauges (resident memory, CPU seconds, open files, threads); the
/// metrics route calls this before each scrape.
pub fn collect_process() {
    PROCESS
        .get_or_init(|| {
            let c = metrics_process::Collector::default();
            c.describe();
            c
        })
        .collect();
}

/// Install the process-wide recorder (once) and describe every metric.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("moltbot_inference_latency".into()),
                    LATENCY_BUCKETS_MS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("moltbot_time_to_first_token".into()),
                        LATENCY_BUCKETS_MS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("moltbot_provider_latency".into()),
                        LATENCY_BUCKETS_MS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("moltbot_http_request_duration".into()),
                        HTTP_BUCKETS_MS,
                    )
                })
                .ok()?
                .install_recorder()
                .ok()?;
            describe();
            Some(recorder)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        "moltbot_inference_latency",
        Unit::Milliseconds,
        "Time from sending a request to the model to its last token, in milliseconds."
    );
    describe_histogram!(
        "moltbot_time_to_first_token",
        Unit::Milliseconds,
        "Time from sending a request to the model to its first token, in milliseconds."
    );
    describe_gauge!(
        "moltbot_concurrent_users",
        "Turns being processed right now."
    );
    describe_gauge!(
        "moltbot_error_rate",
        "Share of HTTP requests that failed (status >= 500) among the last 1024."
    );
    describe_counter!("moltbot_errors_total", "Errors by kind.");
    describe_counter!(
        "moltbot_auth_failures_total",
        "Requests refused for a missing or wrong token (API and admin API)."
    );
    describe_counter!(
        "moltbot_provider_requests_total",
        "Model provider calls by provider kind (openai, anthropic, local) and result (ok, \
         error, cancelled); an error followed by the next provider is a failover."
    );
    describe_histogram!(
        "moltbot_provider_latency",
        Unit::Milliseconds,
        "Time from a provider call to the end of its answer, by provider kind."
    );
    describe_counter!(
        "moltbot_session_cache_total",
        "Turns whose session history was already in RAM (hit) or read from the store (miss)."
    );
    describe_counter!(
        "moltbot_knowledge_lookup_total",
        "Knowledge searches made by the router that found a usable passage (hit) or not (miss)."
    );
    describe_counter!(
        "moltbot_component_restarts_total",
        "Restarts of supervised background components (channel loops, cron, notifiers)."
    );
    describe_counter!(
        "moltbot_http_requests_total",
        "HTTP requests by route template, method and status."
    );
    describe_histogram!(
        "moltbot_http_request_duration",
        Unit::Milliseconds,
        "HTTP request duration until the response head is sent, by route template."
    );
    describe_gauge!("moltbot_ws_connections", "Open WebSocket connections.");
    describe_gauge!(
        "moltbot_gpu_utilization_ratio",
        "GPU busy share (0-1) per device, when an NVIDIA GPU is present."
    );
    describe_gauge!(
        "moltbot_gpu_memory_used_bytes",
        Unit::Bytes,
        "GPU memory in use per device, when an NVIDIA GPU is present."
    );
    describe_gauge!(
        "moltbot_gpu_memory_total_bytes",
        Unit::Bytes,
        "GPU memory per device, when an NVIDIA GPU is present."
    );
    describe_counter!(
        "moltbot_generated_tokens_total",
        "Tokens generated by the model."
    );
    describe_counter!(
        "moltbot_filter_total",
        "Model replies judged by the response filter, by verdict (pass, repaired, rejected, \
         flagged) and issue (none, empty, loop, leak, tool_json, unsafe)."
    );
    describe_counter!(
        "moltbot_local_kv_cache_total",
        "Local model requests by KV reuse: result (hit, miss) and source (slot: the \
         conversation's last turn, shared: another sequence's prefix, prefix: a pinned prefix, \
         restored: a conversation kept in RAM, miss)."
    );
    describe_counter!(
        "moltbot_local_prompt_tokens_total",
        "Local model prompt tokens, by phase: reused from the KV cache or read."
    );
    describe_histogram!(
        "moltbot_local_batch_tokens",
        "Tokens per llama.cpp decode call of the local model (continuous batching)."
    );
    describe_gauge!(
        "moltbot_local_running",
        "Requests the local model is decoding together right now."
    );
    describe_gauge!(
        "moltbot_local_session_cache_bytes",
        Unit::Bytes,
        "RAM holding the KV state of conversations pushed out of the local model's KV cache."
    );
    describe_gauge!(
        "moltbot_local_session_cache_entries",
        "Conversations whose KV state is kept in RAM."
    );
    describe_gauge!(
        "moltbot_local_prefix_cache_entries",
        "Common prompt prefixes pinned in the local model's KV cache."
    );
    describe_gauge!(
        "moltbot_uptime_seconds",
        Unit::Seconds,
        "Seconds since start."
    );
    describe_counter!(
        "moltbot_tool_calls_total",
        "Tool calls of the agent loop, by tool and result (ok or the error kind)."
    );
    describe_histogram!(
        "moltbot_tool_call_duration",
        Unit::Milliseconds,
        "Time one tool call took, by tool."
    );
    describe_counter!(
        "moltbot_tool_web_fetch_total",
        "web_fetch calls by result (ok, denied, error, timeout, cancelled)."
    );
    describe_counter!(
        "moltbot_tool_exec_total",
        "exec commands by result (ok or the error kind)."
    );
    describe_counter!(
        "moltbot_approvals_total",
        "Approval requests by outcome (requested, approved, denied, expired)."
    );
    describe_counter!(
        "moltbot_model_requests_total",
        "Generation requests by model version (v1, v2, …: hot swaps and canaries)."
    );
    describe_counter!(
        "moltbot_model_errors_total",
        "Failed generation requests by model version."
    );
    moltbot_tools::cron::describe_metrics();
    moltbot_tools::skills::describe_metrics();
}

/// Sliding error rate over the last 1024 requests, lock-free: two counters in one atomic.
struct ErrorWindow(std::sync::atomic::AtomicU64);

impl ErrorWindow {
    /// Record one request; returns the current failure share. Packs (total, failed) into
    /// 32 bits each and halves both when the total passes the window, an exponential decay
    /// that is cheap and good enough for a dashboard gauge.
    fn record(&self, failed: bool) -> f64 {
        use std::sync::atomic::Ordering;
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let (mut total, mut bad) = (cur >> 32, cur & 0xffff_ffff);
            total += 1;
            bad += u64::from(failed);
            if total > 1024 {
                total /= 2;
                bad /= 2;
            }
            let next = (total << 32) | bad;
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return bad as f64 / total as f64,
                Err(actual) => cur = actual,
            }
        }
    }
}

static ERRORS: ErrorWindow = ErrorWindow(std::sync::atomic::AtomicU64::new(0));

pub async fn track_http(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // A fixed label set: hyper accepts any token as a method, and each new label value
    // would be a new series kept forever.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    metrics::counter!(
        "moltbot_http_requests_total",
        "route" => route.clone(),
        "method" => method,
        "status" => status.as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!("moltbot_http_request_duration", "route" => route)
        .record(start.elapsed().as_secs_f64() * 1e3);
    metrics::gauge!("moltbot_error_rate").set(ERRORS.record(status.is_server_error()));
    resp
}
