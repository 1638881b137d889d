//! Running a turn in its own task for streaming responses: deltas go over a bounded channel,
//! the outcome over a join handle. The admission permit is moved into the task so it lives
//! exactly as long as the turn.

use crate::state::AppState;
use moltbot_engine::{EngineError, TurnEvent, TurnOutcome, TurnRequest};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TurnStream {
    pub events: mpsc::Receiver<TurnEvent>,
    pub result: JoinHandle<Result<TurnOutcome, EngineError>>,
    /// Cancels the turn when dropped: keep it inside the response stream, so a client that
    /// goes away stops the turn even before the first token (while it waits for the
    /// session or the model).
    pub guard: tokio_util::sync::DropGuard,
}

/// Start a turn. Dropping `events` (the client went away) stops generation.
pub fn spawn_turn(state: &AppState, req: TurnRequest, permit: OwnedSemaphorePermit) -> TurnStream {
    spawn_with(
        state,
        permit,
        CancellationToken::new(),
        move |engine, tx, cancel| async move { engine.turn(req, Some(tx), cancel).await },
    )
}

/// Start any engine call that streams [`TurnEvent`]s.
pub fn spawn_with<F, Fut>(
    state: &AppState,
    permit: OwnedSemaphorePermit,
    cancel: CancellationToken,
    f: F,
) -> TurnStream
where
    F: FnOnce(moltbot_engine::Engine, mpsc::Sender<TurnEvent>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<TurnOutcome, EngineError>> + Send + 'static,
{
    let (tx, events) = mpsc::channel(64);
    let guard = cancel.clone().drop_guard();
    let fut = f(state.engine().clone(), tx, cancel);
    let result = state.inner.turns.spawn(async move {
        let out = fut.await;
        drop(permit);
        out
    });
    TurnStream {
        events,
        result,
        guard,
    }
}
