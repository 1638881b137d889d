//! [`Browser`]: one Chromium for one profile. A task owns the process and its tabs; the
//! handle is a cheap clone that sends it [`Action`]s and gets answers on a `oneshot`.
//!
//! The task starts Chromium on the first call that needs a page, restarts it (reopening its
//! tabs) when the process died, closes it after `idle_close` without calls, and kills it when
//! the last handle is dropped or on [`Browser::shutdown`].

use super::actions::{self, cdp};
use super::proxy::EgressProxy;
use crate::ssrf::HostPolicy;
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::{Handler, Page};
use futures::StreamExt;
use moltbot_core::{ToolError, ToolOutput};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};
use url::Url;

/// Binaries looked for on `PATH` when `tools.browser.executable` is empty.
pub const CANDIDATES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// Calls waiting for one browser, at most; more are refused.
const QUEUE: usize = 8;

/// Tabs open at once, at most.
const MAX_TABS: usize = 10;

/// How long a polite close may take before the process is killed.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// How long Chromium may take to start.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 800;

/// Flags on top of chromiumoxide's defaults (which already hold `--disable-sync`,
/// `--no-first-run`, `--metrics-recording-only`, `--disable-default-apps`,
/// `--disable-background-networking`; repeated here so the list reads complete).
const FLAGS: [&str; 12] = [
    "disable-gpu",
    "disable-quic",
    "no-first-run",
    "disable-background-networking",
    "disable-component-update",
    "disable-sync",
    "disable-default-apps",
    "metrics-recording-only",
    "mute-audio",
    "no-pings",
    "disable-domain-reliability",
    // WebRTC would otherwise send UDP past the proxy.
    "force-webrtc-ip-handling-policy=disable_non_proxied_udp",
];

/// How a [`Browser`] runs.
#[derive(Debug, Clone)]
pub struct BrowserOptions {
    /// The Chromium binary (a path, or a name looked up on `PATH`); empty tries
    /// [`CANDIDATES`].
    pub executable: String,
    /// The profile folder (`--user-data-dir`); created when missing and kept across
    /// restarts, so cookies survive.
    pub user_data_dir: PathBuf,
    /// Close Chromium after this long without a call.
    pub idle_close: Duration,
    /// Budget of one page load.
    pub navigation_timeout: Duration,
    /// Which addresses pages may reach (checked on `open`/`navigate` and by the proxy every
    /// request goes through).
    pub policy: Arc<HostPolicy>,
}

/// One browser action, arguments checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Load `url` in a new tab and make it active.
    Open {
        url: Url,
    },
    /// Load `url` in the active tab (a new one when none is open).
    Navigate {
        url: Url,
    },
    Snapshot,
    Click {
        target: String,
    },
    Type {
        target: String,
        text: String,
        submit: bool,
    },
    Scroll {
        down: bool,
        pixels: Option<u64>,
    },
    Screenshot,
    Tabs,
    SwitchTab {
        index: usize,
    },
    CloseTab {
        index: usize,
    },
}

impl Action {
    /// The URL this action loads, if any.
    fn url(&self) -> Option<&Url> {
        match self {
            Action::Open { url } | Action::Navigate { url } => Some(url),
            _ => None,
        }
    }
}

enum Command {
    Run {
        action: Action,
        reply: oneshot::Sender<Result<ToolOutput, ToolError>>,
    },
    Pid(oneshot::Sender<Option<u32>>),
}

/// Handle to the browser of one profile. Cheap to clone; the browser closes when the last
/// handle is dropped.
#[derive(Debug, Clone)]
pub struct Browser {
    profile: Arc<str>,
    policy: Arc<HostPolicy>,
    tx: mpsc::Sender<Command>,
    running: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Browser {
    /// Start the task for `profile`; Chromium itself starts on the first call that opens a
    /// page. Must be called within a Tokio runtime.
    pub fn spawn(profile: impl Into<String>, options: BrowserOptions) -> Self {
        let profile: Arc<str> = profile.into().into();
        let (tx, rx) = mpsc::channel(QUEUE);
        let running = Arc::new(AtomicBool::new(false));
        let span = tracing::info_span!("browser", profile = %profile);
        let policy = options.policy.clone();
        let stop = CancellationToken::new();
        let actor = Actor {
            stop: stop.clone(),
            options,
            running: None,
            running_flag: running.clone(),
            proxy: None,
            restore: Vec::new(),
            last_used: Instant::now(),
        };
        tokio::spawn(actor.run(rx).instrument(span));
        Self {
            profile,
            policy,
            tx,
            running,
            stop,
        }
    }

    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// Whether Chromium is running for this profile now.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// Run one action. A URL to load is checked against the host policy first, so a refused
    /// address never reaches the browser.
    pub async fn run(&self, action: Action) -> Result<ToolOutput, ToolError> {
        if let Some(url) = action.url() {
            self.policy.check_url(url).await?;
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Run { action, reply })?;
        answer
            .await
            .map_err(|_| ToolError::Failed("the browser task ended during the call".into()))?
    }

    /// The Chromium process id, when it runs.
    pub async fn pid(&self) -> Option<u32> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Pid(reply)).ok()?;
        answer.await.ok().flatten()
    }

    /// Stop the task: the call in progress is abandoned, Chromium is closed (politely, then
    /// by force) and waited for. Later calls fail.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        // The task drops its receiver last, after Chromium has exited.
        self.tx.closed().await;
    }

    fn send(&self, cmd: Command) -> Result<(), ToolError> {
        self.tx.try_send(cmd).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => ToolError::Unavailable(format!(
                "the browser of profile `{}` already has {QUEUE} calls waiting; try again later",
                self.profile
            )),
            mpsc::error::TrySendError::Closed(_) => ToolError::Unavailable(format!(
                "the browser of profile `{}` was shut down",
                self.profile
            )),
        })
    }
}

/// A started Chromium and the tabs the model knows about.
struct Running {
    browser: chromiumoxide::Browser,
    /// Drives the DevTools connection; ends when the connection breaks (process gone).
    handler: JoinHandle<()>,
    tabs: Vec<Tab>,
    active: usize,
}

struct Tab {
    page: Page,
    /// Last known URL, for reopening the tab after a restart.
    url: String,
    /// A `Page.navigate` of this tab did not finish (timed out or abandoned). chromiumoxide
    /// queues a page's navigations behind the unfinished one, so the next load uses a fresh
    /// page instead.
    stuck: bool,
}

struct Actor {
    stop: CancellationToken,
    options: BrowserOptions,
    running: Option<Running>,
    running_flag: Arc<AtomicBool>,
    /// Started with the first launch, kept across restarts.
    proxy: Option<EgressProxy>,
    /// URLs of the tabs to reopen at the next start (after a crash or an idle close), the
    /// active one last.
    restore: Vec<String>,
    last_used: Instant,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let stop = self.stop.clone();
        loop {
            let idle_at = self.last_used + self.options.idle_close;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    None => break,
                    Some(Command::Run { action, mut reply }) => {
                        let result = tokio::select! {
                            result = self.perform(&action) => Some(result),
                            // The caller gave up (cancelled or timed out): stop working for it.
                            _ = reply.closed() => None,
                            _ = stop.cancelled() => None,
                        };
                        self.last_used = Instant::now();
                        match result {
                            Some(result) => {
                                let _ = reply.send(result);
                            }
                            None => debug!("call abandoned by the caller"),
                        }
                    }
                    Some(Command::Pid(reply)) => {
                        let _ = reply.send(self.pid());
                    }
                },
                _ = tokio::time::sleep_until(idle_at), if self.running.is_some() => {
                    info!(idle_secs = self.options.idle_close.as_secs_f64(), "closing the idle browser");
                    self.close(true).await;
                }
                _ = handler_ended(&mut self.running) => {
                    warn!("Chromium exited; it restarts on the next call");
                    self.close(true).await;
                }
            }
        }
        self.close(false).await;
        // Wakes `Browser::shutdown`.
        drop(rx);
    }

    fn pid(&mut self) -> Option<u32> {
        let r = self.running.as_mut()?;
        r.browser.get_mut_child()?.as_mut_inner().id()
    }

    /// Whether Chromium and its connection are up.
    fn alive(&mut self) -> bool {
        match self.running.as_mut() {
            None => false,
            Some(r) => !r.handler.is_finished() && matches!(r.browser.try_wait(), Ok(None)),
        }
    }

    async fn perform(&mut self, action: &Action) -> Result<ToolOutput, ToolError> {
        if action.url().is_none() && self.running.is_none() && self.restore.is_empty() {
            return Err(no_page());
        }
        if self.running.is_some() && !self.alive() {
            warn!("Chromium is gone; restarting it");
            self.close(true).await;
        }
        if self.running.is_none() {
            self.launch().await?;
        }
        match self.dispatch(action).await {
            Err(err) if !self.alive() => {
                warn!(cause = %err, "Chromium died during the call; restarting it and retrying");
                self.close(true).await;
                self.launch().await?;
                self.dispatch(action).await
            }
            other => other,
        }
    }

    async fn launch(&mut self) -> Result<(), ToolError> {
        let exe = find_executable(&self.options.executable).map_err(ToolError::Unavailable)?;
        if self.proxy.is_none() {
            let proxy = EgressProxy::start(self.options.policy.clone())
                .await
                .map_err(|e| ToolError::Failed(format!("cannot start the browser's proxy: {e}")))?;
            self.proxy = Some(proxy);
        }
        let proxy = self.proxy.as_ref().map(EgressProxy::addr);
        let dir = &self.options.user_data_dir;
        prepare_profile(dir).await?;
        let sandbox = !running_as_root();
        let started = match start(&exe, dir, proxy, sandbox, &self.options).await {
            Err(err) if sandbox && err.to_lowercase().contains("sandbox") => {
                warn!(cause = %err, "Chromium's sandbox is not usable here; starting without it");
                start(&exe, dir, proxy, false, &self.options).await
            }
            other => other,
        };
        let (mut browser, handler) = started.map_err(|err| {
            ToolError::Unavailable(format!("cannot start Chromium ({}): {err}", exe.display()))
        })?;
        let handler = tokio::spawn(drive(handler).in_current_span());
        let pid = browser.get_mut_child().and_then(|c| c.as_mut_inner().id());
        info!(pid, exe = %exe.display(), "Chromium started");
        self.running = Some(Running {
            browser,
            handler,
            tabs: Vec::new(),
            active: 0,
        });
        self.running_flag.store(true, Ordering::Relaxed);
        self.reopen_tabs().await;
        Ok(())
    }

    /// Reopen the tabs of the previous process, concurrently; a tab that fails to load stays
    /// open on its error page.
    async fn reopen_tabs(&mut self) {
        let urls = std::mem::take(&mut self.restore);
        let Some(r) = self.running.as_mut() else {
            return;
        };
        let budget = self.options.navigation_timeout;
        let loads = urls.iter().map(|raw| {
            let browser = &r.browser;
            async move {
                let page = browser.new_page("about:blank").await.ok()?;
                let stuck = match Url::parse(raw) {
                    Ok(url) => !matches!(actions::load(&page, &url, budget).await, Ok(false)),
                    Err(_) => false,
                };
                Some(Tab {
                    page,
                    url: raw.clone(),
                    stuck,
                })
            }
        });
        r.tabs = futures::future::join_all(loads)
            .await
            .into_iter()
            .flatten()
            .collect();
        r.active = r.tabs.len().saturating_sub(1);
        if let Some(tab) = r.tabs.last() {
            let _ = tab.page.bring_to_front().await;
        }
        debug!(tabs = r.tabs.len(), "reopened tabs");
    }

    /// Close Chromium: politely, then by force. With `remember`, the next start reopens its
    /// tabs.
    async fn close(&mut self, remember: bool) {
        let Some(mut r) = self.running.take() else {
            return;
        };
        self.running_flag.store(false, Ordering::Relaxed);
        if remember {
            // The active tab goes last, so it is active again after reopening.
            let mut urls: Vec<String> = Vec::new();
            for (i, tab) in r.tabs.iter().enumerate() {
                if i != r.active {
                    urls.push(tab.url.clone());
                }
            }
            if let Some(tab) = r.tabs.get(r.active) {
                urls.push(tab.url.clone());
            }
            urls.retain(|u| u.starts_with("http://") || u.starts_with("https://"));
            self.restore = urls;
        } else {
            self.restore.clear();
        }
        r.tabs.clear();
        if !r.handler.is_finished() {
            let _ = tokio::time::timeout(CLOSE_GRACE, r.browser.close()).await;
        }
        match tokio::time::timeout(CLOSE_GRACE, r.browser.wait()).await {
            Ok(Ok(_)) => {}
            _ => {
                if let Some(Err(err)) = r.browser.kill().await {
                    warn!(cause = %err, "cannot kill Chromium");
                }
            }
        }
        r.handler.abort();
        debug!("Chromium closed");
    }

    async fn dispatch(&mut self, action: &Action) -> Result<ToolOutput, ToolError> {
        let budget = self.options.navigation_timeout;
        let Some(r) = self.running.as_mut() else {
            return Err(ToolError::Failed("the browser is not running".into()));
        };
        match action {
            Action::Open { url } => {
                if r.tabs.len() >= MAX_TABS {
                    return Err(ToolError::InvalidArguments(format!(
                        "{MAX_TABS} tabs are open already; close one with `close_tab` first"
                    )));
                }
                r.new_tab(url).await?;
                let loading = r.load_in_active(url, budget).await?;
                r.page_report(loading, budget, "").await
            }
            Action::Navigate { url } => {
                if r.tabs.is_empty() {
                    r.new_tab(url).await?;
                }
                let loading = r.load_in_active(url, budget).await?;
                r.page_report(loading, budget, "").await
            }
            Action::Snapshot => r.page_report(false, budget, "").await,
            Action::Click { target } => {
                let loading = actions::click(&r.active_tab()?.page, target, budget).await?;
                r.page_report(loading, budget, "").await
            }
            Action::Type {
                target,
                text,
                submit,
            } => {
                let page = &r.active_tab()?.page;
                let loading = actions::type_text(page, target, text, *submit, budget).await?;
                r.page_report(loading, budget, "").await
            }
            Action::Scroll { down, pixels } => {
                let line = actions::scroll(&r.active_tab()?.page, *down, *pixels).await?;
                Ok(ToolOutput::text(line))
            }
            Action::Screenshot => actions::screenshot(&r.active_tab()?.page).await,
            Action::Tabs => r.tab_list().await,
            Action::SwitchTab { index } => {
                r.check_index(*index)?;
                r.active = *index;
                let page = &r.tabs[r.active].page;
                page.bring_to_front().await.map_err(cdp)?;
                r.page_report(false, budget, &format!("Switched to tab {index}.\n"))
                    .await
            }
            Action::CloseTab { index } => {
                r.check_index(*index)?;
                let tab = r.tabs.remove(*index);
                tab.page.close().await.map_err(cdp)?;
                if r.active > *index || r.active >= r.tabs.len() {
                    r.active = r.active.saturating_sub(1);
                }
                if let Some(tab) = r.tabs.get(r.active) {
                    tab.page.bring_to_front().await.map_err(cdp)?;
                }
                r.tab_list().await
            }
        }
    }
}

impl Running {
    /// Open a blank tab for `url` and make it active.
    async fn new_tab(&mut self, url: &Url) -> Result<(), ToolError> {
        let page = self.browser.new_page("about:blank").await.map_err(cdp)?;
        page.bring_to_front().await.map_err(cdp)?;
        self.tabs.push(Tab {
            page,
            url: url.to_string(),
            stuck: false,
        });
        self.active = self.tabs.len() - 1;
        Ok(())
    }

    /// Load `url` in the active tab; see [`actions::load`].
    async fn load_in_active(&mut self, url: &Url, budget: Duration) -> Result<bool, ToolError> {
        let active = self.active;
        let tab = self.tabs.get_mut(active).ok_or_else(no_page)?;
        if tab.stuck {
            let fresh = self.browser.new_page("about:blank").await.map_err(cdp)?;
            fresh.bring_to_front().await.map_err(cdp)?;
            let old = std::mem::replace(&mut tab.page, fresh);
            tab.stuck = false;
            if let Err(err) = old.close().await {
                debug!(cause = %err, "cannot close a stuck page");
            }
        }
        tab.url = url.to_string();
        // Stays set if this call is abandoned mid-load.
        tab.stuck = true;
        let res = actions::load(&tab.page, url, budget).await;
        tab.stuck = !matches!(res, Ok(false));
        res
    }

    fn active_tab(&self) -> Result<&Tab, ToolError> {
        self.tabs.get(self.active).ok_or_else(no_page)
    }

    fn check_index(&self, index: usize) -> Result<(), ToolError> {
        if index < self.tabs.len() {
            Ok(())
        } else if self.tabs.is_empty() {
            Err(no_page())
        } else {
            Err(ToolError::InvalidArguments(format!(
                "`index` must be between 0 and {}, got {index}; list them with `tabs`",
                self.tabs.len() - 1
            )))
        }
    }

    /// The active page's snapshot after `prefix`, noting when it had not finished loading.
    async fn page_report(
        &mut self,
        loading: bool,
        budget: Duration,
        prefix: &str,
    ) -> Result<ToolOutput, ToolError> {
        let active = self.active;
        let tab = self.tabs.get_mut(active).ok_or_else(no_page)?;
        let snapshot = actions::snapshot(&tab.page).await?;
        tab.url = snapshot.url.clone();
        let mut text = prefix.to_string();
        if loading {
            let _ = writeln!(
                text,
                "(The page was still loading after {} s; this is what had loaded.)",
                budget.as_secs()
            );
        }
        text.push_str(&snapshot.render());
        Ok(ToolOutput::text(text))
    }

    async fn tab_list(&mut self) -> Result<ToolOutput, ToolError> {
        if self.tabs.is_empty() {
            return Ok(ToolOutput::text("No tabs are open."));
        }
        let mut text = format!("Tabs ({}):", self.tabs.len());
        for (i, tab) in self.tabs.iter_mut().enumerate() {
            if let Ok(Some(url)) = tab.page.url().await {
                tab.url = url;
            }
            let title = actions::title(&tab.page).await;
            let marker = if i == self.active { " (active)" } else { "" };
            let _ = write!(text, "\n[{i}]{marker} {title:?} {}", tab.url);
        }
        Ok(ToolOutput::text(text))
    }
}

fn no_page() -> ToolError {
    ToolError::InvalidArguments("no page is open; use action `open` with a `url` first".to_string())
}

/// Resolves when the DevTools connection of the running browser ends; never when none runs.
async fn handler_ended(running: &mut Option<Running>) {
    match running {
        Some(r) if !r.handler.is_finished() => {
            let _ = (&mut r.handler).await;
        }
        Some(_) => {}
        None => std::future::pending().await,
    }
}

/// Poll the DevTools connection until it breaks.
async fn drive(mut handler: Handler) {
    while let Some(event) = handler.next().await {
        if let Err(err) = event {
            debug!(cause = %err, "DevTools connection ended");
            break;
        }
    }
}

async fn start(
    exe: &Path,
    dir: &Path,
    proxy: Option<std::net::SocketAddr>,
    sandbox: bool,
    options: &BrowserOptions,
) -> Result<(chromiumoxide::Browser, Handler), String> {
    let mut config = chromiumoxide::BrowserConfig::builder()
        .chrome_executable(exe)
        .user_data_dir(dir)
        .window_size(WIDTH, HEIGHT)
        .viewport(Viewport {
            width: WIDTH,
            height: HEIGHT,
            ..Viewport::default()
        })
        .launch_timeout(LAUNCH_TIMEOUT)
        .request_timeout(options.navigation_timeout + Duration::from_secs(5))
        .args(FLAGS);
    if let Some(proxy) = proxy {
        config = config.args([
            format!("proxy-server=http://{proxy}"),
            // Loopback goes through the proxy too (Chromium bypasses it by default).
            "proxy-bypass-list=<-loopback>".to_string(),
        ]);
    }
    if !sandbox {
        config = config.no_sandbox();
    }
    let config = config.build()?;
    let (browser, handler) = chromiumoxide::Browser::launch(config)
        .await
        .map_err(|e| shorten(&e.to_string(), 600))?;
    Ok((browser, handler))
}

/// Create the profile folder and drop a dead process's lock, which would stop Chromium.
async fn prepare_profile(dir: &Path) -> Result<(), ToolError> {
    tokio::fs::create_dir_all(dir).await.map_err(|e| {
        ToolError::Failed(format!(
            "cannot create the browser profile folder {}: {e}",
            dir.display()
        ))
    })?;
    for lock in ["SingletonLock", "SingletonSocket", "SingletonCookie"] {
        let _ = tokio::fs::remove_file(dir.join(lock)).await;
    }
    Ok(())
}

/// The Chromium binary: `configured` (a path, or a name on `PATH`), else the first of
/// [`CANDIDATES`] on `PATH`. The error says what was looked for.
pub fn find_executable(configured: &str) -> Result<PathBuf, String> {
    let configured = configured.trim();
    if !configured.is_empty() {
        let path = Path::new(configured);
        if path.components().count() > 1 {
            return if path.is_file() {
                Ok(path.to_path_buf())
            } else {
                Err(format!(
                    "`tools.browser.executable` {configured:?} does not exist"
                ))
            };
        }
        return on_path(configured)
            .ok_or_else(|| format!("`tools.browser.executable` {configured:?} is not on PATH"));
    }
    CANDIDATES
        .iter()
        .find_map(|name| on_path(name))
        .ok_or_else(|| {
            format!(
                "no Chromium found (looked for {} on PATH); install it or set \
             `tools.browser.executable`",
                CANDIDATES.join(", ")
            )
        })
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Chromium refuses its sandbox as root.
#[cfg(unix)]
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the effective user (no libc call needed).
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[cfg(not(unix))]
fn running_as_root() -> bool {
    false
}

fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}
