//! The `browser` tool against a real headless Chromium and pages served on loopback: reading,
//! clicking, forms, scrolling, screenshots, tabs, the host policy (on `open` and, through the
//! proxy, on everything a page loads), restart after a crash, idle close and cancellation.
//!
//! Without Chromium these tests print a skip line and pass, unless `CI` is set (CI installs
//! it).

use axum::extract::Query;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use moltbot_core::config::BrowserConfig;
use moltbot_core::{Tool, ToolContext, ToolError, ToolOutput};
use moltbot_tools::browser::{find_executable, BrowserTool, DEFAULT_PROFILE};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether Chromium is here; without it a test skips (or fails on CI).
fn chromium_available(test: &str) -> bool {
    match find_executable("") {
        Ok(_) => true,
        Err(why) if std::env::var_os("CI").is_some() => panic!("{test}: {why}"),
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

const HOME: &str = r#"<!doctype html><html><head><title>Home</title></head><body>
<h1>Welcome   to the
   test site</h1>
<p>Some <b>readable</b> text.</p>
<p style="display:none">Hidden words</p>
<a href="/next" target="_blank">Next page</a>
<form action="/echo" method="get">
  <label for="q">Search terms</label>
  <input id="q" name="q" placeholder="query">
  <button type="submit">Search</button>
</form>
<div style="height: 3000px">tall</div>
<p>The end.</p>
</body></html>"#;

/// A site on 127.0.0.1; `/probe` is a page that tries to reach `other` (loopback too, but
/// not allowlisted) by fetch and by a link.
async fn site(other: Option<SocketAddr>) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let probe = match other {
        Some(o) => format!(
            r#"<html><head><title>Probe</title></head><body><p id="out">waiting</p>
            <a href="http://{o}/secret">Secret</a>
            <script>fetch("http://{o}/secret").then(r => r.text())
              .then(t => document.getElementById("out").textContent = "fetched " + t)
              .catch(() => document.getElementById("out").textContent = "fetch blocked");
            </script></body></html>"#
        ),
        None => String::new(),
    };
    let counter = hits.clone();
    let app = Router::new()
        .route("/", get(|| async { Html(HOME) }))
        .route(
            "/next",
            get(|| async {
                Html("<html><head><title>Next</title></head><body>This is the second page.</body></html>")
            }),
        )
        .route(
            "/echo",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                let term = q.get("q").cloned().unwrap_or_default();
                Html(format!(
                    "<html><head><title>Results</title></head><body>You searched for: {term}</body></html>"
                ))
            }),
        )
        .route("/probe", get(move || async move { Html(probe) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Html("late")
            }),
        )
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    next.run(req).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

fn tool(allow: &[&str], root: &Path) -> BrowserTool {
    let cfg = BrowserConfig {
        allow_hosts: allow.iter().map(|s| s.to_string()).collect(),
        navigation_timeout_secs: 15,
        ..BrowserConfig::default()
    };
    BrowserTool::new(&cfg, root.to_path_buf()).unwrap()
}

/// One call, with a hang guard (not a speed assertion).
async fn call(tool: &BrowserTool, args: Value) -> Result<ToolOutput, ToolError> {
    let ctx = ToolContext::detached("test");
    tokio::time::timeout(Duration::from_secs(60), tool.call(args, &ctx))
        .await
        .expect("the browser call hung")
}

async fn ok(tool: &BrowserTool, args: Value) -> String {
    match call(tool, args.clone()).await {
        Ok(out) => out.text,
        Err(err) => panic!("{args}: {err}"),
    }
}

/// The ref of the first element line holding `needle`.
fn ref_of(snapshot: &str, needle: &str) -> String {
    let line = snapshot
        .lines()
        .find(|l| l.starts_with("[e") && l.contains(needle))
        .unwrap_or_else(|| panic!("no element with {needle:?} in:\n{snapshot}"));
    line[1..line.find(']').unwrap()].to_string()
}

async fn pid(tool: &BrowserTool) -> Option<u32> {
    tool.browser(DEFAULT_PROFILE).unwrap().pid().await
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Processes whose command line mentions `dir` (Chromium and its helpers).
fn processes_using(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// Wait (bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Shut the tool down and check no Chromium process of the profile is left.
async fn shutdown_clean(tool: &BrowserTool, root: &Path) {
    let pid = pid(tool).await;
    tool.shutdown().await;
    if let Some(pid) = pid {
        assert!(
            !process_exists(pid),
            "Chromium {pid} still runs after shutdown"
        );
    }
    eventually("no Chromium helper is left", || {
        processes_using(root).is_empty()
    })
    .await;
}

#[tokio::test]
async fn reads_clicks_types_and_scrolls() {
    if !chromium_available("reads_clicks_types_and_scrolls") {
        return;
    }
    let (addr, _) = site(None).await;
    let root = tempfile::tempdir().unwrap();
    let tool = tool(&["127.0.0.1"], root.path());

    let home = ok(
        &tool,
        json!({"action": "open", "url": format!("http://{addr}/")}),
    )
    .await;
    assert!(home.contains("Title: Home"), "{home}");
    assert!(home.contains("Welcome to the test site"), "{home}");
    assert!(!home.contains("Hidden words"), "{home}");
    assert!(home.contains("link \"Next page\" -> /next"), "{home}");
    assert!(
        home.contains("textbox \"Search terms\" placeholder=\"query\""),
        "{home}"
    );
    assert!(home.contains("button \"Search\""), "{home}");

    // The link has target=_blank; it still opens in this tab.
    let link = ref_of(&home, "Next page");
    let next = ok(&tool, json!({"action": "click", "ref": link})).await;
    assert!(next.contains("This is the second page."), "{next}");
    assert!(next.contains("No interactive elements."), "{next}");

    let err = call(&tool, json!({"action": "click", "ref": link}))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments(_)), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "`ref` {link} is not on the page; take a snapshot first"
        )),
        "{err}"
    );

    let home = ok(
        &tool,
        json!({"action": "navigate", "url": format!("http://{addr}/")}),
    )
    .await;
    let field = ref_of(&home, "Search terms");
    let typed = ok(
        &tool,
        json!({"action": "type", "ref": field, "text": "hello moltbot"}),
    )
    .await;
    assert!(typed.contains("value=\"hello moltbot\""), "{typed}");
    let result = ok(
        &tool,
        json!({"action": "type", "ref": field, "text": "ünïcode & more", "submit": true}),
    )
    .await;
    assert!(
        result.contains("You searched for: ünïcode & more"),
        "{result}"
    );
    assert!(result.contains("Title: Results"), "{result}");

    ok(
        &tool,
        json!({"action": "navigate", "url": format!("http://{addr}/")}),
    )
    .await;
    let down = ok(&tool, json!({"action": "scroll", "direction": "down"})).await;
    assert!(down.starts_with("Scrolled down; now showing "), "{down}");
    assert!(!down.contains("showing 0–"), "{down}");
    let snap = ok(&tool, json!({"action": "snapshot"})).await;
    assert!(!snap.contains("Scroll: 0 of"), "{snap}");
    let up = ok(
        &tool,
        json!({"action": "scroll", "direction": "up", "pixels": 100000}),
    )
    .await;
    assert!(up.contains("This is the top of the page."), "{up}");

    shutdown_clean(&tool, root.path()).await;
}

#[tokio::test]
async fn screenshots_and_tabs() {
    if !chromium_available("screenshots_and_tabs") {
        return;
    }
    let (addr, _) = site(None).await;
    let root = tempfile::tempdir().unwrap();
    let tool = tool(&["127.0.0.1"], root.path());

    let err = call(&tool, json!({"action": "screenshot"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no page is open"), "{err}");
    assert_eq!(
        pid(&tool).await,
        None,
        "no page asked for: Chromium not started"
    );

    ok(
        &tool,
        json!({"action": "open", "url": format!("http://{addr}/")}),
    )
    .await;
    let shot = call(&tool, json!({"action": "screenshot"})).await.unwrap();
    assert_eq!(shot.attachments.len(), 1);
    let png = &shot.attachments[0];
    assert_eq!(png.mime, "image/png");
    assert!(png.data.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(png.data.len() > 2_000, "{} bytes", png.data.len());
    assert!(shot.text.contains("1280×800 PNG"), "{}", shot.text);

    ok(
        &tool,
        json!({"action": "open", "url": format!("http://{addr}/next")}),
    )
    .await;
    let tabs = ok(&tool, json!({"action": "tabs"})).await;
    assert!(tabs.starts_with("Tabs (2):"), "{tabs}");
    assert!(tabs.contains("[0] \"Home\""), "{tabs}");
    assert!(tabs.contains("[1] (active) \"Next\""), "{tabs}");

    let switched = ok(&tool, json!({"action": "switch_tab", "index": 0})).await;
    assert!(switched.starts_with("Switched to tab 0."), "{switched}");
    assert!(switched.contains("Welcome to the test site"), "{switched}");
    let err = call(&tool, json!({"action": "switch_tab", "index": 5}))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`index` must be between 0 and 1, got 5"),
        "{err}"
    );

    let left = ok(&tool, json!({"action": "close_tab", "index": 0})).await;
    assert!(left.starts_with("Tabs (1):"), "{left}");
    assert!(left.contains("[0] (active) \"Next\""), "{left}");
    let snap = ok(&tool, json!({"action": "snapshot"})).await;
    assert!(snap.contains("This is the second page."), "{snap}");

    shutdown_clean(&tool, root.path()).await;
}

#[tokio::test]
async fn refuses_private_and_non_http_urls_before_starting() {
    let (addr, hits) = site(None).await;
    let root = tempfile::tempdir().unwrap();
    let tool = tool(&[], root.path());

    let err = call(
        &tool,
        json!({"action": "open", "url": format!("http://{addr}/")}),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ToolError::Denied(_)), "{err}");
    assert!(err.to_string().contains("loopback"), "{err}");
    for url in [
        "file:///etc/passwd",
        "chrome://settings",
        "javascript:alert(1)",
    ] {
        let err = call(&tool, json!({"action": "navigate", "url": url}))
            .await
            .unwrap_err();
        assert!(matches!(err, ToolError::Denied(_)), "{url}: {err}");
        assert!(err.to_string().contains("only http and https"), "{err}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert_eq!(
        pid(&tool).await,
        None,
        "Chromium must not start for refused URLs"
    );
    tool.shutdown().await;
}

#[tokio::test]
async fn pages_cannot_reach_addresses_outside_the_allowlist() {
    if !chromium_available("pages_cannot_reach_addresses_outside_the_allowlist") {
        return;
    }
    // A second server on 127.0.0.2: loopback, and not in the allowlist.
    let secret_hits = Arc::new(AtomicUsize::new(0));
    let counter = secret_hits.clone();
    let secret = Router::new().route(
        "/secret",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "top secret" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let other = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, secret).await });

    let (addr, _) = site(Some(other)).await;
    let root = tempfile::tempdir().unwrap();
    let tool = tool(&["127.0.0.1"], root.path());

    ok(
        &tool,
        json!({"action": "open", "url": format!("http://{addr}/probe")}),
    )
    .await;
    // The page's fetch runs after load; wait for its outcome.
    let mut snap = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        snap = ok(&tool, json!({"action": "snapshot"})).await;
        if !snap.contains("waiting") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(snap.contains("fetch blocked"), "{snap}");

    let link = ref_of(&snap, "Secret");
    let page = ok(&tool, json!({"action": "click", "ref": link})).await;
    assert!(page.contains("moltbot refused"), "{page}");
    assert!(!page.contains("top secret"), "{page}");
    assert_eq!(secret_hits.load(Ordering::SeqCst), 0);

    shutdown_clean(&tool, root.path()).await;
}

#[tokio::test]
async fn restarts_after_chromium_is_killed() {
    if !chromium_available("restarts_after_chromium_is_killed") {
        return;
    }
    let (addr, _) = site(None).await;
    let root = tempfile::tempdir().unwrap();
    let tool = tool(&["127.0.0.1"], root.path());

    ok(
        &tool,
        json!({"action": "open", "url": format!("http://{addr}/next")}),
    )
    .await;
    let first = pid(&tool).await.expect("Chromium runs");
    let status = std::process::Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // The next call starts a new Chromium with the tab reopened.
    let snap = ok(&tool, json!({"action": "snapshot"})).await;
    assert!(snap.contains("This is the second page."), "{snap}");
    let second = pid(&tool).await.expect("Chromium runs again");
    assert_ne!(first, second);
    assert!(!process_exists(first), "the killed process was not reaped");

    let home = ok(
        &tool,
        json!({"action": "navigate", "url": format!("http://{addr}/")}),
    )
    .await;
    assert!(home.contains("Welcome to the test site"), "{home}");

    shutdown_clean(&tool, root.path()).await;
}

#[tokio::test]
async fn closes_when_idle_and_comes_back() {
    if !chromium_available("closes_when_idle_and_comes_back") {
        return;
    }
    let (addr, _) = site(None).await;
    let root = tempfile::tempdir().unwrap();
    let tool = tool(&["127.0.0.1"], root.path()).with_idle_close(Duration::from_millis(300));

    ok(
        &tool,
        json!({"action": "open", "url": format!("http://{addr}/next")}),
    )
    .await;
    let first = pid(&tool).await.expect("Chromium runs");
    let browser = tool.browser(DEFAULT_PROFILE).unwrap();
    eventually("the idle browser closed", || !browser.is_running()).await;
    assert_eq!(browser.pid().await, None);
    assert!(
        !process_exists(first),
        "Chromium {first} still runs after idle close"
    );

    // The next call starts it again, with the tab it had.
    let snap = ok(&tool, json!({"action": "snapshot"})).await;
    assert!(snap.contains("This is the second page."), "{snap}");

    shutdown_clean(&tool, root.path()).await;
}

#[tokio::test]
async fn cancellation_stops_a_call_and_the_browser_stays_usable() {
    if !chromium_available("cancellation_stops_a_call_and_the_browser_stays_usable") {
        return;
    }
    let (addr, _) = site(None).await;
    let root = tempfile::tempdir().unwrap();
    let tool = tool(&["127.0.0.1"], root.path());
    ok(
        &tool,
        json!({"action": "open", "url": format!("http://{addr}/")}),
    )
    .await;

    let ctx = ToolContext::detached("test");
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let args = json!({"action": "navigate", "url": format!("http://{addr}/slow")});
    let res = tokio::time::timeout(Duration::from_secs(30), tool.call(args, &ctx))
        .await
        .expect("cancel did not stop the call");
    assert!(matches!(res, Err(ToolError::Cancelled)), "{res:?}");

    let next = ok(
        &tool,
        json!({"action": "navigate", "url": format!("http://{addr}/next")}),
    )
    .await;
    assert!(next.contains("This is the second page."), "{next}");

    shutdown_clean(&tool, root.path()).await;
}
