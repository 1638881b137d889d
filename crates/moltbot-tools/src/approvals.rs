//! Approval requests: a tool call that needs the owner's yes (an `exec` command outside
//! the allowlist under the `ask` policy) waits here until the owner approves or denies it
//! (CLI `moltbot approvals`, `/api/v1/approvals`, the Control UI) or the wait runs out.
//!
//! Requests live in memory: a restart drops pending ones, and the waiting calls with them.

use moltbot_core::{Origin, ToolContext, ToolError};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, oneshot};

/// What the owner is asked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalRequest {
    pub id: String,
    /// The tool asking (`exec`).
    pub tool: String,
    /// What would run.
    pub command: String,
    pub session_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    pub created_ms: u64,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approved,
    Denied,
    Expired,
}

struct Pending {
    request: ApprovalRequest,
    answer: oneshot::Sender<Decision>,
}

struct Inner {
    // A std mutex, never held across an await.
    pending: Mutex<HashMap<String, Pending>>,
    events: broadcast::Sender<ApprovalRequest>,
}

/// Cheap-clone handle to the pending approvals.
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

impl Default for Approvals {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                pending: Mutex::new(HashMap::new()),
                events: broadcast::Sender::new(64),
            }),
        }
    }
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("pending", &self.list().len())
            .finish()
    }
}

impl Approvals {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the owner about `command` and wait up to `wait` (or until the turn is cancelled).
    pub async fn ask(
        &self,
        command: &str,
        ctx: &ToolContext,
        wait: Duration,
    ) -> Result<Decision, ToolError> {
        let now = now_ms();
        let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let request = ApprovalRequest {
            id: id.clone(),
            tool: "exec".into(),
            command: command.to_string(),
            session_id: ctx.session_id.clone(),
            user: ctx.user.clone(),
            origin: ctx.origin.clone(),
            created_ms: now,
            expires_ms: now + wait.as_millis() as u64,
        };
        let (tx, rx) = oneshot::channel();
        self.lock().insert(
            id.clone(),
            Pending {
                request: request.clone(),
                answer: tx,
            },
        );
        tracing::info!(id = %id, command = %command, session = %ctx.session_id, "approval requested");
        metrics::counter!("moltbot_approvals_total", "result" => "requested").increment(1);
        let _ = self.inner.events.send(request);
        let decision = tokio::select! {
            r = tokio::time::timeout(wait, rx) => match r {
                Ok(Ok(d)) => d,
                Ok(Err(_)) => Decision::Denied,
                Err(_) => Decision::Expired,
            },
            () = ctx.cancel.cancelled() => {
                self.lock().remove(&id);
                return Err(ToolError::Cancelled);
            }
        };
        self.lock().remove(&id);
        let label = match decision {
            Decision::Approved => "approved",
            Decision::Denied => "denied",
            Decision::Expired => "expired",
        };
        metrics::counter!("moltbot_approvals_total", "result" => label).increment(1);
        Ok(decision)
    }

    /// Pending requests, oldest first.
    pub fn list(&self) -> Vec<ApprovalRequest> {
        let mut out: Vec<ApprovalRequest> =
            self.lock().values().map(|p| p.request.clone()).collect();
        out.sort_by_key(|r| r.created_ms);
        out
    }

    /// Answer request `id`; false when there is no such pending request.
    pub fn decide(&self, id: &str, approve: bool) -> bool {
        let Some(pending) = self.lock().remove(id) else {
            return false;
        };
        tracing::info!(id = %id, approve, command = %pending.request.command, "approval answered");
        let decision = if approve {
            Decision::Approved
        } else {
            Decision::Denied
        };
        pending.answer.send(decision).is_ok()
    }

    /// New requests as they are made (to notify the owner).
    pub fn subscribe(&self) -> broadcast::Receiver<ApprovalRequest> {
        self.inner.events.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
