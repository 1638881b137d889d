//! Supervised background components: a task that fails, panics or ends before shutdown is
//! started again after a pause that doubles up to a ceiling (and starts over once a run
//! has lasted a while), and its state is kept where `/health` can read it.
//!
//! The channels' receive loops, the channel inbox and outbox loops, the cron scheduler, the
//! approval notifier and the metrics upkeep all run under one [`Supervisor`] per process.
//! The gateway reports `degraded` while any of them is restarting or has stopped for good,
//! and `ok` again once every one is running.
//!
//! tokio has no supervision tree of its own and the actor crates that do bring their own
//! runtime model; this is the small loop we need around plain tokio tasks.

use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Why a component's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth another try after a pause (a lost connection, a crash).
    Retry(String),
    /// Trying again cannot help (bad credentials): the component stays stopped.
    Fatal(String),
}

impl Failure {
    pub fn retry(e: impl std::fmt::Display) -> Self {
        Failure::Retry(e.to_string())
    }
    pub fn fatal(e: impl std::fmt::Display) -> Self {
        Failure::Fatal(e.to_string())
    }
}

/// Where a component stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    Running,
    /// It failed and waits for its next start.
    Restarting,
    /// It ended for good with a fatal error.
    Failed,
    /// It ended because the process is shutting down.
    Stopped,
}

/// One component as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentStatus {
    pub status: ComponentState,
    /// Starts after the first.
    pub restarts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the current state began, in milliseconds since the Unix epoch.
    pub since_ms: u64,
}

impl ComponentStatus {
    /// Running, or stopped by a shutdown.
    pub fn is_healthy(&self) -> bool {
        matches!(
            self.status,
            ComponentState::Running | ComponentState::Stopped
        )
    }
}

/// Pauses between restarts.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A run that lasted this long resets the pause to `initial`.
    pub stable_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// Runs components and keeps their states. Cheap to clone; clones share the states.
#[derive(Clone, Default)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    states: Mutex<BTreeMap<String, ComponentStatus>>,
    backoff: Option<Backoff>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("components", &*self.lock())
            .finish()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        Self::default()
    }

    /// A supervisor with other pauses (tests use short ones).
    pub fn with_backoff(backoff: Backoff) -> Self {
        Supervisor {
            inner: Arc::new(Inner {
                states: Mutex::default(),
                backoff: Some(backoff),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ComponentStatus>> {
        // A panic while holding this lock cannot leave the map half-updated (every write is
        // one insert), so a poisoned lock is still good to use.
        self.inner
            .states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, name: &str, status: ComponentState, error: Option<String>, restart: bool) {
        let mut states = self.lock();
        let entry = states
            .entry(name.to_string())
            .or_insert_with(|| ComponentStatus {
                status,
                restarts: 0,
                last_error: None,
                since_ms: now_ms(),
            });
        if entry.status != status {
            entry.since_ms = now_ms();
        }
        entry.status = status;
        if restart {
            entry.restarts += 1;
        }
        if error.is_some() {
            entry.last_error = error;
        }
    }

    /// Every component by name.
    pub fn statuses(&self) -> BTreeMap<String, ComponentStatus> {
        self.lock().clone()
    }

    /// Whether every component is running (or was stopped by a shutdown).
    pub fn healthy(&self) -> bool {
        self.lock().values().all(ComponentStatus::is_healthy)
    }

    /// Run `make()`'s future as component `name` until `shutdown`, starting a new one after
    /// each failure, panic or early end. Returns the supervising task.
    pub fn spawn<F, Fut>(
        &self,
        name: impl Into<String>,
        shutdown: CancellationToken,
        make: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), Failure>> + Send + 'static,
    {
        let this = self.clone();
        let name = name.into();
        this.set(&name, ComponentState::Running, None, false);
        tokio::spawn(async move { this.supervise(name, shutdown, make).await })
    }

    /// [`Supervisor::supervise`] taking the supervisor by value, for a `'static` future to
    /// hand to a task tracker.
    pub async fn supervise_owned<F, Fut>(self, name: String, shutdown: CancellationToken, make: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), Failure>> + Send + 'static,
    {
        self.supervise(name, shutdown, make).await
    }

    /// [`Supervisor::spawn`] run in the current task.
    pub async fn supervise<F, Fut>(&self, name: String, shutdown: CancellationToken, mut make: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), Failure>> + Send + 'static,
    {
        let backoff = self.inner.backoff.unwrap_or_default();
        let mut pause = backoff.initial;
        let mut first = true;
        loop {
            self.set(&name, ComponentState::Running, None, !first);
            first = false;
            let started = Instant::now();
            let mut run = tokio::spawn(make());
            let ended = tokio::select! {
                r = &mut run => r,
                () = shutdown.cancelled() => {
                    // Give the component a moment to stop on its own (it watches the same
                    // token), then abandon it.
                    if tokio::time::timeout(Duration::from_secs(5), &mut run).await.is_err() {
                        run.abort();
                    }
                    self.set(&name, ComponentState::Stopped, None, false);
                    return;
                }
            };
            let why = match ended {
                Ok(Ok(())) if shutdown.is_cancelled() => {
                    self.set(&name, ComponentState::Stopped, None, false);
                    return;
                }
                Ok(Ok(())) => "it ended on its own".to_string(),
                Ok(Err(Failure::Fatal(e))) => {
                    tracing::error!(component = %name, cause = %e, "component stopped for good");
                    self.set(&name, ComponentState::Failed, Some(e), false);
                    return;
                }
                Ok(Err(Failure::Retry(e))) => e,
                Err(join) if join.is_panic() => format!("it panicked: {}", panic_text(join)),
                Err(join) => format!("it was cancelled: {join}"),
            };
            if started.elapsed() >= backoff.stable_after {
                pause = backoff.initial;
            }
            tracing::warn!(
                component = %name,
                cause = %why,
                retry_in_ms = pause.as_millis() as u64,
                "component failed; restarting"
            );
            metrics::counter!("moltbot_component_restarts_total", "component" => metric_name(&name))
                .increment(1);
            self.set(&name, ComponentState::Restarting, Some(why), false);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => {
                    self.set(&name, ComponentState::Stopped, None, false);
                    return;
                }
            }
            pause = (pause * 2).min(backoff.max);
        }
    }
}

/// Component names are few and fixed (`cron.scheduler`, `channel.telegram`…), so they are
/// bounded metric labels; anything else is folded into `other`.
fn metric_name(name: &str) -> String {
    if name.len() <= 48
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        name.to_string()
    } else {
        "other".to_string()
    }
}

fn panic_text(join: tokio::task::JoinError) -> String {
    let payload = join.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-text panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick() -> Supervisor {
        Supervisor::with_backoff(Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(80),
            stable_after: Duration::from_secs(60),
        })
    }

    async fn until(sup: &Supervisor, name: &str, f: impl Fn(&ComponentStatus) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(s) = sup.statuses().get(name) {
                if f(s) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{name}: {:?}", sup.statuses());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_panicking_component_is_restarted_and_reported() {
        // A pause long enough for the poll below to see the `restarting` state.
        let sup = Supervisor::with_backoff(Backoff {
            initial: Duration::from_millis(300),
            max: Duration::from_millis(600),
            stable_after: Duration::from_secs(60),
        });
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
        let r = runs.clone();
        let stop2 = stop.clone();
        let task = sup.spawn("worker", stop.clone(), move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            let mut gate = gate_rx.clone();
            let stop = stop2.clone();
            async move {
                if n < 2 {
                    // Fail twice, the second time only once the test has seen the first.
                    if n == 1 {
                        let _ = gate.wait_for(|open| *open).await;
                    }
                    panic!("boom {n}");
                }
                stop.cancelled().await;
                Ok(())
            }
        });
        until(&sup, "worker", |s| s.status == ComponentState::Restarting).await;
        assert!(!sup.healthy());
        let s = &sup.statuses()["worker"];
        assert!(s.last_error.as_deref().unwrap().contains("boom 0"), "{s:?}");
        gate_tx.send(true).unwrap();
        until(&sup, "worker", |s| {
            s.status == ComponentState::Running && s.restarts == 2
        })
        .await;
        assert!(sup.healthy());
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        stop.cancel();
        task.await.unwrap();
        assert_eq!(sup.statuses()["worker"].status, ComponentState::Stopped);
        assert!(sup.healthy());
    }

    #[tokio::test]
    async fn errors_and_early_ends_restart_with_growing_pauses() {
        let sup = quick();
        let stop = CancellationToken::new();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let s2 = starts.clone();
        let task = sup.spawn("flaky", stop.clone(), move || {
            let mut v = s2.lock().unwrap();
            v.push(Instant::now());
            let n = v.len();
            async move {
                match n {
                    1 | 2 => Err(Failure::retry("connection refused")),
                    3 => Ok(()), // ended before shutdown: a failure too
                    _ => std::future::pending().await,
                }
            }
        });
        until(&sup, "flaky", |s| {
            s.restarts == 3 && s.status == ComponentState::Running
        })
        .await;
        let t = starts.lock().unwrap().clone();
        let gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[0] >= Duration::from_millis(20), "{gaps:?}");
        assert!(gaps[1] >= Duration::from_millis(40), "{gaps:?}");
        assert!(gaps[2] >= Duration::from_millis(80), "{gaps:?}");
        let status = &sup.statuses()["flaky"];
        assert_eq!(status.last_error.as_deref(), Some("it ended on its own"));
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_fatal_error_stops_the_component_for_good() {
        let sup = quick();
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let task = sup.spawn("channel.test", stop.clone(), move || {
            r.fetch_add(1, Ordering::SeqCst);
            async { Err(Failure::fatal("401 Unauthorized: check the bot token")) }
        });
        task.await.unwrap();
        let s = &sup.statuses()["channel.test"];
        assert_eq!(s.status, ComponentState::Failed);
        assert!(s.last_error.as_deref().unwrap().contains("bot token"));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!sup.healthy());
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["status"], "failed");
    }

    #[tokio::test]
    async fn shutdown_during_a_pause_stops_without_another_start() {
        let sup = Supervisor::with_backoff(Backoff {
            initial: Duration::from_secs(30),
            ..Backoff::default()
        });
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let task = sup.spawn("sleepy", stop.clone(), move || {
            r.fetch_add(1, Ordering::SeqCst);
            async { Err(Failure::retry("down")) }
        });
        until(&sup, "sleepy", |s| s.status == ComponentState::Restarting).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("stops at once")
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(sup.statuses()["sleepy"].status, ComponentState::Stopped);
    }
}
