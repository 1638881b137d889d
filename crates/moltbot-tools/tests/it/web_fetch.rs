//! `web_fetch` against real HTTP servers on loopback: readable text, the SSRF guard on the
//! first hop and on redirects, and the limits (redirects, bytes, time, cancellation).

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use moltbot_core::config::WebFetchConfig;
use moltbot_core::{Tool, ToolContext, ToolError, ToolOutput};
use moltbot_tools::web_fetch::WebFetchTool;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A test server on `ip`, counting the requests it sees.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Server {
    async fn start(ip: &str, app: Router) -> Server {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = app.layer(middleware::from_fn_with_state(hits.clone(), count));
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server { addr, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn count(State(hits): State<Arc<AtomicUsize>>, req: Request, next: Next) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    next.run(req).await
}

fn tool(allow: &[&str], edit: impl FnOnce(&mut WebFetchConfig)) -> WebFetchTool {
    let mut cfg = WebFetchConfig {
        allow_hosts: allow.iter().map(|s| s.to_string()).collect(),
        ..WebFetchConfig::default()
    };
    edit(&mut cfg);
    WebFetchTool::new(&cfg).unwrap()
}

/// One call with a hang guard (no timing assertion: only that it finished).
async fn fetch(tool: &WebFetchTool, url: &str) -> Result<ToolOutput, ToolError> {
    fetch_in(tool, json!({ "url": url }), &ToolContext::detached("test")).await
}

async fn fetch_in(
    tool: &WebFetchTool,
    args: serde_json::Value,
    ctx: &ToolContext,
) -> Result<ToolOutput, ToolError> {
    tokio::time::timeout(Duration::from_secs(20), tool.call(args, ctx))
        .await
        .expect("web_fetch hung")
}

const PAGE: &str = r#"<!doctype html>
<html><head><title>Test page</title>
<style>body { color: hotpink; }</style>
<script>var secret = "from-script";</script></head>
<body><h1>Welcome</h1>
<p>First   paragraph with <a href="/about">About us</a> inside.</p>
<script>document.write("also-script")</script>
<h2>Second</h2><p>More text.</p></body></html>"#;

fn page_app() -> Router {
    Router::new().route("/", get(|| async { Html(PAGE) }))
}

#[tokio::test]
async fn allowlisted_loopback_page_comes_back_as_readable_text() {
    let server = Server::start("127.0.0.1", page_app()).await;
    let out = fetch(&tool(&["127.0.0.1/32"], |_| {}), &server.url("/"))
        .await
        .unwrap()
        .text;
    assert!(
        out.starts_with(&format!("URL: {}\nTitle: Test page\n", server.url("/"))),
        "{out}"
    );
    assert!(out.contains("# Welcome"), "{out}");
    assert!(out.contains("## Second"), "{out}");
    assert!(
        out.contains("First paragraph with [About us](") && out.contains("/about) inside."),
        "{out}"
    );
    assert!(out.contains("More text."), "{out}");
    for hidden in ["hotpink", "from-script", "also-script"] {
        assert!(!out.contains(hidden), "{hidden} leaked: {out}");
    }
}

#[tokio::test]
async fn loopback_without_allowlist_is_refused_before_connecting() {
    let server = Server::start("127.0.0.1", page_app()).await;
    let err = fetch(&tool(&[], |_| {}), &server.url("/"))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::Denied(_)), "{err}");
    assert!(err.to_string().contains("loopback"), "{err}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn redirect_to_a_non_allowlisted_address_is_refused() {
    // 127.0.0.2 is loopback too, but only 127.0.0.1 is allowlisted.
    let target = Server::start("127.0.0.2", page_app()).await;
    let to = target.url("/");
    let app = Router::new()
        .route("/", get(move || async move { Redirect::temporary(&to) }))
        .route(
            "/meta",
            get(|| async { Redirect::to("http://169.254.169.254/latest/meta-data/") }),
        );
    let origin = Server::start("127.0.0.1", app).await;
    let t = tool(&["127.0.0.1/32"], |_| {});

    let err = fetch(&t, &origin.url("/")).await.unwrap_err();
    assert!(matches!(err, ToolError::Denied(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("redirect from") && msg.contains("127.0.0.2"),
        "{msg}"
    );
    assert_eq!(target.hits(), 0, "the redirect target was contacted");

    let err = fetch(&t, &origin.url("/meta")).await.unwrap_err();
    assert!(matches!(err, ToolError::Denied(_)), "{err}");
    assert!(err.to_string().contains("169.254.169.254"), "{err}");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit() {
    // `/hop/n` redirects to `/hop/n-1`; `/hop/0` is the page.
    let app = Router::new().route(
        "/hop/{n}",
        get(|Path(n): Path<u32>| async move {
            if n == 0 {
                "arrived".into_response()
            } else {
                Redirect::to(&format!("/hop/{}", n - 1)).into_response()
            }
        }),
    );
    let server = Server::start("127.0.0.1", app).await;
    let t = tool(&["127.0.0.1"], |c| c.max_redirects = 3);

    let out = fetch(&t, &server.url("/hop/3")).await.unwrap().text;
    assert!(
        out.starts_with(&format!("URL: {}\n", server.url("/hop/0"))),
        "{out}"
    );
    assert!(out.ends_with("arrived"), "{out}");
    assert_eq!(server.hits(), 4);

    let err = fetch(&t, &server.url("/hop/9")).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ToolError::Failed(_)), "{msg}");
    assert!(
        msg.contains("max_redirects") && msg.contains("limit is 3"),
        "{msg}"
    );
    assert_eq!(
        server.hits(),
        4 + 4,
        "one request and three redirects, no more"
    );
}

#[tokio::test]
async fn localhost_needs_its_name_in_the_allowlist() {
    let server = Server::start("127.0.0.1", page_app()).await;
    let url = format!("http://localhost:{}/", server.addr.port());

    let err = fetch(&tool(&[], |_| {}), &url).await.unwrap_err();
    assert!(matches!(err, ToolError::Denied(_)), "{err}");
    assert_eq!(server.hits(), 0);

    let out = fetch(&tool(&["localhost"], |_| {}), &url)
        .await
        .unwrap()
        .text;
    assert!(out.contains("# Welcome"), "{out}");
}

#[tokio::test]
async fn large_body_is_truncated_and_says_so() {
    // An endless body: the tool must stop reading, not just cut afterwards.
    let app = Router::new().route(
        "/",
        get(|| async {
            let chunks = futures::stream::repeat_with(|| {
                Ok::<_, std::io::Error>(Bytes::from_static(&[b'z'; 1000]))
            });
            (
                [(header::CONTENT_TYPE, "text/plain")],
                Body::from_stream(chunks),
            )
        }),
    );
    let server = Server::start("127.0.0.1", app).await;
    let t = tool(&["127.0.0.1"], |c| c.max_bytes = 2048);
    let out = fetch(&t, &server.url("/")).await.unwrap().text;
    assert!(out.contains("truncated at 2048 bytes"), "{out}");
    assert_eq!(out.matches('z').count(), 2048, "{out}");
}

#[tokio::test]
async fn max_chars_caps_the_output() {
    let server = Server::start(
        "127.0.0.1",
        Router::new().route("/", get(|| async { "y".repeat(5000) })),
    )
    .await;
    let t = tool(&["127.0.0.1"], |_| {});
    let ctx = ToolContext::detached("test");
    let out = fetch_in(&t, json!({"url": server.url("/"), "max_chars": 300}), &ctx)
        .await
        .unwrap()
        .text;
    assert!(out.chars().count() <= 300, "{} chars", out.chars().count());
    assert!(out.contains("[output cut at"), "{out}");
    let err = fetch_in(&t, json!({"url": server.url("/"), "max_chars": 5}), &ctx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`max_chars` must be"), "{err}");
}

async fn sleepy() -> &'static str {
    tokio::time::sleep(Duration::from_secs(30)).await;
    "too late"
}

#[tokio::test]
async fn slow_server_times_out() {
    let server = Server::start("127.0.0.1", Router::new().route("/", get(sleepy))).await;
    let t = tool(&["127.0.0.1"], |c| c.timeout_secs = 1);
    let err = fetch(&t, &server.url("/")).await.unwrap_err();
    assert!(
        matches!(err, ToolError::Timeout(d) if d == Duration::from_secs(1)),
        "{err}"
    );
}

#[tokio::test]
async fn cancel_stops_the_call() {
    let server = Server::start("127.0.0.1", Router::new().route("/", get(sleepy))).await;
    let t = tool(&["127.0.0.1"], |_| {});
    let ctx = ToolContext::detached("test");
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    });
    let err = fetch_in(&t, json!({ "url": server.url("/") }), &ctx)
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::Cancelled), "{err}");
}

#[tokio::test]
async fn binary_content_is_refused() {
    let app = Router::new().route(
        "/logo.png",
        get(|| async {
            (
                [(header::CONTENT_TYPE, "image/png")],
                vec![0x89u8, b'P', b'N', b'G', 0, 0],
            )
        }),
    );
    let server = Server::start("127.0.0.1", app).await;
    let err = fetch(&tool(&["127.0.0.1"], |_| {}), &server.url("/logo.png"))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::Failed(_)), "{err}");
    assert!(err.to_string().contains("image/png, not text"), "{err}");
}

#[tokio::test]
async fn http_errors_name_the_status() {
    let app = Router::new().route("/boom", get(|| async { StatusCode::BAD_GATEWAY }));
    let server = Server::start("127.0.0.1", app).await;
    let t = tool(&["127.0.0.1"], |_| {});
    let err = fetch(&t, &server.url("/missing")).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ToolError::Failed(_)), "{msg}");
    assert!(msg.contains("404") && msg.contains("/missing"), "{msg}");
    let err = fetch(&t, &server.url("/boom")).await.unwrap_err();
    assert!(err.to_string().contains("502"), "{err}");
}

#[tokio::test]
async fn json_is_pretty_printed_and_charsets_are_decoded() {
    let app = Router::new()
        .route(
            "/api",
            get(|| async { Json(json!({"name": "moltbot", "tags": ["a"]})) }),
        )
        .route(
            "/latin1",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; charset=iso-8859-1")],
                    b"caf\xe9".to_vec(),
                )
            }),
        );
    let server = Server::start("127.0.0.1", app).await;
    let t = tool(&["127.0.0.1"], |_| {});
    let out = fetch(&t, &server.url("/api")).await.unwrap().text;
    assert!(
        out.ends_with("{\n  \"name\": \"moltbot\",\n  \"tags\": [\n    \"a\"\n  ]\n}"),
        "{out}"
    );
    let out = fetch(&t, &server.url("/latin1")).await.unwrap().text;
    assert!(out.ends_with("\n\ncafé"), "{out}");
}

#[tokio::test]
async fn bad_arguments_and_schemes() {
    let t = tool(&[], |_| {});
    let err = fetch_in(&t, json!({}), &ToolContext::detached("t"))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments(_)), "{err}");
    let err = fetch(&t, "file:///etc/passwd").await.unwrap_err();
    assert!(matches!(err, ToolError::Denied(_)), "{err}");
    let err = fetch(&t, "http://[::1]:9/").await.unwrap_err();
    assert!(matches!(err, ToolError::Denied(_)), "{err}");
}

#[test]
fn spec_is_valid_and_short() {
    let t = tool(&[], |_| {});
    let spec = t.spec();
    assert_eq!(spec.name, "web_fetch");
    assert!(spec.description.len() < 400);
    assert_eq!(spec.parameters["required"], json!(["url"]));
    assert!(WebFetchTool::new(&WebFetchConfig {
        allow_hosts: vec!["10.0.0.0/99".into()],
        ..WebFetchConfig::default()
    })
    .is_err());
}
