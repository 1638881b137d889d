//! Hot reload: a `notify` watcher on the skills folder wakes one task, which waits for the
//! burst of changes to settle, rescans and applies the result.

use super::set::{scan, ScanReport, Skills};
use super::SkillsError;
use crate::registry::Registry;
use notify::event::ModifyKind;
use notify::{Event, EventKind, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Quiet time after the last change before a rescan (editors write a file in several steps).
const DEBOUNCE: Duration = Duration::from_millis(250);
/// Longest wait for quiet: a folder that never stops changing is still rescanned this often.
const MAX_SETTLE: Duration = Duration::from_secs(2);

impl Skills {
    /// Watch `dir` (recursively) and rescan it after every burst of changes, swapping the
    /// snapshot and updating `registry`. Rescans once right away, so changes made since
    /// [`Skills::load`] are not missed. The task ends when `shutdown` fires. Call inside a
    /// tokio runtime.
    ///
    /// A missing folder is [`SkillsError::DirMissing`]: nothing is created or watched (a
    /// folder created later is picked up at the next start).
    pub fn watch(
        &self,
        dir: &Path,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
    ) -> Result<JoinHandle<()>, SkillsError> {
        if !dir.is_dir() {
            return Err(SkillsError::DirMissing {
                dir: dir.to_path_buf(),
            });
        }
        let watch_error = |source| SkillsError::Watch {
            dir: dir.to_path_buf(),
            source,
        };
        // One pending wake is enough: the rescan reads everything anyway.
        let (wake, woken) = mpsc::channel::<()>(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<Event>| match event {
                Ok(event) if !relevant(&event.kind) => {}
                Ok(_) => {
                    let _ = wake.try_send(());
                }
                Err(e) => {
                    tracing::warn!(cause = %e, "skills watcher error; rescanning");
                    let _ = wake.try_send(());
                }
            })
            .map_err(watch_error)?;
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .map_err(watch_error)?;
        tracing::info!(dir = %dir.display(), "watching skills");

        let skills = self.clone();
        let dir = dir.to_path_buf();
        let span = tracing::info_span!("skills_watch", dir = %dir.display());
        Ok(tokio::spawn(
            async move {
                // Dropping the watcher stops it, so it lives as long as the task.
                let _watcher = watcher;
                run(skills, dir, registry, woken, shutdown).await;
            }
            .instrument(span),
        ))
    }
}

/// Whether an event can change what a scan finds. Opening and reading files (the scan
/// itself does) and metadata changes (atime) are not.
fn relevant(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
    )
}

async fn run(
    skills: Skills,
    dir: PathBuf,
    registry: Arc<Registry>,
    mut woken: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) {
    loop {
        rescan(&skills, &dir, &registry).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            wake = woken.recv() => if wake.is_none() { return },
        }
        if !settle(&mut woken, &shutdown).await {
            return;
        }
    }
}

/// Wait until no change came for [`DEBOUNCE`] (at most [`MAX_SETTLE`]); `false` on
/// shutdown.
async fn settle(woken: &mut mpsc::Receiver<()>, shutdown: &CancellationToken) -> bool {
    let deadline = Instant::now() + MAX_SETTLE;
    loop {
        let quiet = tokio::time::sleep_until((Instant::now() + DEBOUNCE).min(deadline));
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = quiet => return true,
            wake = woken.recv() => if wake.is_none() { return false },
        }
    }
}

async fn rescan(skills: &Skills, dir: &Path, registry: &Registry) {
    let scan_dir = dir.to_path_buf();
    let report = match tokio::task::spawn_blocking(move || scan(&scan_dir)).await {
        Ok(Ok(report)) => report,
        Ok(Err(e @ SkillsError::DirMissing { .. })) => {
            // The folder went away: so did its skills.
            tracing::warn!(cause = %e, "skills folder removed");
            ScanReport {
                dir: dir.to_path_buf(),
                ..ScanReport::default()
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(cause = %e, "skills rescan failed; keeping the current skills");
            return;
        }
        Err(e) => {
            tracing::warn!(cause = %e, "skills rescan task failed; keeping the current skills");
            return;
        }
    };
    let changes = skills.apply(&report, registry);
    if !changes.is_empty() {
        tracing::debug!(?changes, "skills reloaded");
    }
}
