//! The Control UI in a real headless Chromium, against the real `moltbot` binary with a fake
//! OpenAI server (streamed replies) and a fake Telegram (a pairing request) on loopback:
//! sign in, chat and watch the reply stream in, find the session in the list, approve a
//! pairing code, add a cron job, read health, metrics, capabilities and model versions, and
//! take a screenshot. Chromium is driven over CDP with chromiumoxide.

use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "ui-gateway-token";
const ADMIN_TOKEN: &str = "ui-admin-token";
const BOT_TOKEN: &str = "515151:ui-telegram-token";

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        });
    match found {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("control UI test: chromium is not installed (scripts/setup-deps.sh installs it)")
        }
        None => {
            eprintln!("skipping the control UI test: chromium is not installed");
            None
        }
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

fn start_gateway(home: &Path, port: u16, openai: &str, telegram: &str) -> Gateway {
    let mut c = Command::new(env!("CARGO_BIN_EXE_moltbot"));
    c.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MOLTBOT_UNDERSTANDING__ENCODER", "none")
        // Every turn goes to the (fake) model, so the streamed reply is known.
        .env("MOLTBOT_ROUTER__ENABLED", "false")
        .env("MOLTBOT_GATEWAY__PORT", port.to_string())
        .env("MOLTBOT_GATEWAY_TOKEN", TOKEN)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("MOLTBOT_MODEL__PROVIDERS", "[\"openai\"]")
        .env("MOLTBOT_MODEL__OPENAI__BASE_URL", openai)
        .env("MOLTBOT_CHANNELS__TELEGRAM__ENABLED", "true")
        .env("MOLTBOT_CHANNELS__TELEGRAM__BOT_TOKEN", BOT_TOKEN)
        .env("MOLTBOT_CHANNELS__TELEGRAM__API_BASE", telegram)
        .env("MOLTBOT_CHANNELS__TELEGRAM__POLL_TIMEOUT_SECS", "1")
        .args(["gateway"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Gateway(c.spawn().expect("start the moltbot binary"))
}

async fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Evaluate `expr` until it is true; panic with `what` (and the page's errors) after `secs`.
async fn wait_for(page: &Page, expr: &str, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = page
            .evaluate(format!("Boolean({expr})"))
            .await
            .ok()
            .and_then(|r| r.into_value::<bool>().ok())
            .unwrap_or(false);
        if v {
            return;
        }
        if Instant::now() > deadline {
            let errors: String = page
                .evaluate(
                    "JSON.stringify({errors: window.__errors || [], \
                     toast: document.getElementById('toast').textContent, \
                     shown: [...document.querySelectorAll('p.error:not([hidden])')].map((p) => p.textContent)})",
                )
                .await
                .ok()
                .and_then(|r| r.into_value().ok())
                .unwrap_or_default();
            panic!("timed out waiting for {what} ({expr}); page state: {errors}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(page: &Page, expr: &str) -> String {
    page.evaluate(expr)
        .await
        .unwrap_or_else(|e| panic!("evaluate {expr}: {e}"))
        .into_value::<String>()
        .unwrap_or_default()
}

/// Click into `selector` and type `value` with real key events.
async fn type_into(page: &Page, selector: &str, value: &str) {
    let field = page
        .find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("no {selector}: {e}"));
    field.click().await.unwrap();
    field.type_str(value).await.unwrap();
}

async fn click(page: &Page, selector: &str) {
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("no {selector}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {selector}: {e}"));
}

/// A PNG of the page, checked and saved under the target folder's `tmp/`.
async fn screenshot(page: &Page, name: &str) {
    let png = page
        .screenshot(
            ScreenshotParams::builder()
                .format(CaptureScreenshotFormat::Png)
                .full_page(true)
                .build(),
        )
        .await
        .unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot: {} bytes",
        png.len()
    );
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&shot, &png).unwrap();
    eprintln!("control UI screenshot: {}", shot.display());
}

async fn open_tab(page: &Page, name: &str) {
    click(page, &format!("#tabs a[data-tab={name}]")).await;
    wait_for(
        page,
        &format!("!document.getElementById('tab-{name}').hidden"),
        5,
        name,
    )
    .await;
}

#[test]
fn control_ui_in_headless_chromium() {
    let Some(exe) = chromium() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let reply_words = "Tides rise and fall twice a day because the Moon pulls the oceans";
        let fake = moltbot_fakes::FakeOpenAi::builder()
            .reply(reply_words)
            .chunk_delay(Duration::from_millis(40))
            .start()
            .await;
        let tg = moltbot_fakes::telegram::FakeTelegram::start(BOT_TOKEN).await;
        let home = tempfile::tempdir().unwrap();
        let port = free_port();
        let _gateway = start_gateway(home.path(), port, &fake.base_url(), &tg.base_url());
        wait_ready(port).await;

        let profile = tempfile::tempdir().unwrap();
        let config = BrowserConfig::builder()
            .chrome_executable(exe)
            .user_data_dir(profile.path())
            .no_sandbox()
            .window_size(1280, 900)
            .viewport(Viewport {
                width: 1280,
                height: 900,
                ..Viewport::default()
            })
            .args([
                "disable-gpu",
                "disable-quic",
                "disable-background-networking",
                "disable-component-update",
            ])
            .build()
            .unwrap();
        let (mut browser, mut handler) = Browser::launch(config).await.expect("launch chromium");
        let events = tokio::spawn(async move { while handler.next().await.is_some() {} });

        let page = browser.new_page("about:blank").await.unwrap();
        page.evaluate_on_new_document(
            "window.__errors = []; \
             window.addEventListener('error', (e) => window.__errors.push(String(e.message))); \
             window.addEventListener('unhandledrejection', (e) => window.__errors.push(String(e.reason)));",
        )
        .await
        .unwrap();
        page.goto(format!("http://127.0.0.1:{port}/")).await.unwrap();

        // Auth is on: the page asks for the token, refuses a wrong one, takes the right one.
        wait_for(&page, "!document.getElementById('login').hidden", 10, "the sign-in form").await;
        type_into(&page, "#login-form input[name=token]", "wrong-token").await;
        click(&page, "#login-form button[type=submit]").await;
        wait_for(&page, "!document.getElementById('login-error').hidden", 5, "the refusal").await;
        page.evaluate("document.querySelector('#login-form input[name=token]').value = ''")
            .await
            .unwrap();
        type_into(&page, "#login-form input[name=token]", TOKEN).await;
        click(&page, "#login-form button[type=submit]").await;
        wait_for(&page, "document.getElementById('login').hidden", 5, "signing in").await;

        // Chat: the reply arrives in several pieces (counted by a MutationObserver) and ends
        // with its metadata line.
        page.evaluate(
            "window.__updates = 0; new MutationObserver(() => window.__updates++) \
             .observe(document.getElementById('log'), {childList: true, subtree: true, characterData: true});",
        )
        .await
        .unwrap();
        type_into(&page, "#chat-form input[name=message]", "why are there tides").await;
        click(&page, "#chat-form button[type=submit]").await;
        wait_for(
            &page,
            "document.querySelector('.msg.assistant[data-done=\"1\"], .msg.error[data-done=\"1\"]')",
            30,
            "the reply",
        )
        .await;
        let reply = text(
            &page,
            "document.querySelector('.msg[data-done=\"1\"]').firstChild.textContent",
        )
        .await;
        assert_eq!(reply, reply_words, "the streamed reply");
        let updates: f64 = page
            .evaluate("window.__updates")
            .await
            .unwrap()
            .into_value()
            .unwrap();
        assert!(updates >= 5.0, "the reply streamed in pieces: {updates} DOM updates");
        let meta = text(&page, "document.querySelector('.msg[data-done=\"1\"] .meta').textContent").await;
        assert!(meta.contains("ms"), "metadata line: {meta:?}");
        let session = text(&page, "sessionStorage.getItem('moltbot-session')").await;
        wait_for(
            &page,
            &format!("document.querySelector('#sessions li[data-session=\"{session}\"]')"),
            5,
            "the session in the list",
        )
        .await;

        screenshot(&page, "control-ui-chat.png").await;

        // Pairing: an unknown Telegram sender gets a code; the owner approves it in the UI.
        tg.push_message(4242, 4242, "hi, can I talk to the bot?");
        let sent = tg.wait_sent(1, Duration::from_secs(20)).await;
        assert_eq!(sent.len(), 1, "the pairing code was sent");
        open_tab(&page, "pairing").await;
        wait_for(&page, "document.querySelector('#pairing button[data-approve]')", 10, "the pairing request").await;
        let code = text(&page, "document.querySelector('#pairing button[data-approve]').dataset.approve").await;
        assert!(sent[0].text.contains(&code), "{:?} holds {code}", sent[0].text);
        click(&page, "#pairing button[data-approve]").await;
        wait_for(&page, "document.querySelector('#allowed tr[data-sender=\"4242\"]')", 10, "the approved sender").await;
        let sent = tg.wait_sent(2, Duration::from_secs(20)).await;
        assert!(sent[1].text.contains("approved"), "{:?}", sent[1].text);

        // Cron: add a job for this chat's session from the form; it is listed.
        open_tab(&page, "cron").await;
        page.evaluate("document.querySelector('#cron-form select[name=kind]').value = 'every'")
            .await
            .unwrap();
        type_into(&page, "#cron-form input[name=name]", "stretch reminder").await;
        type_into(&page, "#cron-form input[name=expr]", "2h").await;
        type_into(&page, "#cron-form input[name=text]", "time to stretch").await;
        click(&page, "#cron-form button[type=submit]").await;
        wait_for(&page, "document.querySelector('#cron tr[data-job]')", 10, "the new job").await;
        let row = text(&page, "document.querySelector('#cron tr[data-job]').textContent").await;
        assert!(row.contains("stretch reminder") && row.contains("every 2h") && row.contains(&session), "{row}");

        // Capabilities and approvals are listed.
        open_tab(&page, "capabilities").await;
        wait_for(&page, "document.querySelector('#capabilities tr[data-capability=\"web_fetch\"]')", 10, "web_fetch").await;
        open_tab(&page, "approvals").await;
        wait_for(&page, "document.querySelector('#approvals tbody td')", 10, "the approvals table").await;

        // Model versions need the admin token, not the gateway token.
        open_tab(&page, "models").await;
        wait_for(&page, "!document.getElementById('models-error').hidden", 10, "the admin refusal").await;
        type_into(&page, "#admin-form input[name=admin]", ADMIN_TOKEN).await;
        click(&page, "#admin-form button[type=submit]").await;
        wait_for(&page, "document.querySelector('#models tr[data-version=\"v1\"]')", 10, "version v1").await;
        let v1 = text(&page, "document.querySelector('#models tr[data-version=\"v1\"]').textContent").await;
        assert!(v1.contains("100%") && v1.contains("ready"), "{v1}");

        // Overview last, so its screenshot shows the traffic of everything above.
        open_tab(&page, "overview").await;
        wait_for(&page, "[...document.querySelectorAll('#health td')].some((td) => td.textContent === 'store')", 10, "health").await;
        wait_for(
            &page,
            "[...document.querySelectorAll('#metrics tr')].some((tr) => tr.cells[0].textContent === 'HTTP requests' && Number(tr.cells[1].textContent) > 0)",
            10,
            "the metrics glance",
        )
        .await;
        let status = text(&page, "document.getElementById('status').textContent").await;
        assert!(status.starts_with("ok"), "{status}");

        let errors = text(&page, "JSON.stringify(window.__errors)").await;
        assert_eq!(errors, "[]", "script errors on the page");

        screenshot(&page, "control-ui-overview.png").await;

        browser.close().await.unwrap();
        let _ = browser.wait().await;
        events.abort();
    });
}
