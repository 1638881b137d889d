//! The seam between "a replica received a turn" and "a replica runs it".
//!
//! Without a bus (the default) [`Engine::turn`](crate::Engine::turn) runs the turn in this
//! process. With one set ([`Engine::set_bus`](crate::Engine::set_bus)) every turn is handed
//! to it: the Kafka bus (`moltbot-bus`) publishes the turn keyed by its session, the
//! replica that owns that session's partition runs it with
//! [`Engine::turn_here`](crate::Engine::turn_here), and the reply's events and outcome come
//! back to the caller here, whichever replica ran it.

use crate::{EngineError, TurnEvent, TurnOutcome, TurnRequest};
use futures::future::BoxFuture;
use moltbot_core::ModelError;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Carries turns to the replica that runs them and their replies back.
pub trait MessageBus: Send + Sync + 'static {
    /// `kafka`, … (the in-process default has no bus object).
    fn name(&self) -> &'static str;

    /// Hand a turn over and wait for its outcome. `req.turn_id` is always set. Events
    /// stream to `events`; when `cancel` fires (or `events` is dropped) the replica running
    /// the turn is told to stop.
    fn submit(
        &self,
        req: TurnRequest,
        events: Option<mpsc::Sender<TurnEvent>>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<TurnOutcome, EngineError>>;

    /// State for `/health` (`ok` false when the bus cannot carry turns now). `/health` is
    /// open to anyone who reaches the port: no addresses, names or error texts in `detail`.
    fn health(&self) -> BusHealth;
}

#[derive(Debug, Clone, Serialize)]
pub struct BusHealth {
    pub ok: bool,
    pub kind: &'static str,
    pub detail: serde_json::Value,
}

/// A turn's failure as it crosses the bus: its kind and message, with the few fields the
/// caller's HTTP mapping needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl From<&EngineError> for WireError {
    fn from(e: &EngineError) -> Self {
        let (status, retry_after_ms, message) = match e {
            EngineError::Model(ModelError::Upstream { status, body }) => {
                (Some(*status), None, body.clone())
            }
            EngineError::Model(ModelError::RateLimited { retry_after }) => (
                None,
                retry_after.map(|d| d.as_millis() as u64),
                e.to_string(),
            ),
            EngineError::Model(ModelError::Timeout(d)) => {
                (None, Some(d.as_millis() as u64), e.to_string())
            }
            // The inner message, so it is not wrapped twice when rebuilt.
            EngineError::InvalidInput(m) | EngineError::NotReady(m) | EngineError::Bus(m) => {
                (None, None, m.clone())
            }
            EngineError::Model(
                ModelError::Connect(m)
                | ModelError::Protocol(m)
                | ModelError::Unavailable(m)
                | ModelError::InvalidRequest(m),
            ) => (None, None, m.clone()),
            _ => (None, None, e.to_string()),
        };
        WireError {
            kind: e.kind().to_string(),
            message,
            status,
            retry_after_ms,
        }
    }
}

impl From<WireError> for EngineError {
    fn from(w: WireError) -> Self {
        let ms = |v: Option<u64>| v.map(Duration::from_millis);
        match w.kind.as_str() {
            "invalid_request" => EngineError::InvalidInput(w.message),
            "model_not_ready" => EngineError::NotReady(w.message),
            "bus_unavailable" => EngineError::Bus(w.message),
            "model_connect" => ModelError::Connect(w.message).into(),
            "model_timeout" => {
                ModelError::Timeout(ms(w.retry_after_ms).unwrap_or(Duration::ZERO)).into()
            }
            "model_rate_limited" => ModelError::RateLimited {
                retry_after: ms(w.retry_after_ms),
            }
            .into(),
            "model_upstream" => ModelError::Upstream {
                status: w.status.unwrap_or(502),
                body: w.message,
            }
            .into(),
            "model_protocol" => ModelError::Protocol(w.message).into(),
            "model_unavailable" => ModelError::Unavailable(w.message).into(),
            "model_invalid_request" => ModelError::InvalidRequest(w.message).into(),
            "cancelled" => ModelError::Cancelled.into(),
            // A store failure on the replica that ran the turn, or anything newer.
            _ => EngineError::Remote(w.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_survive_the_round_trip() {
        let cases: Vec<EngineError> = vec![
            EngineError::InvalidInput("`message` must not be empty".into()),
            EngineError::NotReady("loading".into()),
            EngineError::Bus("no broker".into()),
            ModelError::Upstream {
                status: 503,
                body: "busy".into(),
            }
            .into(),
            ModelError::RateLimited {
                retry_after: Some(Duration::from_secs(3)),
            }
            .into(),
            ModelError::Timeout(Duration::from_secs(30)).into(),
            ModelError::Cancelled.into(),
        ];
        for e in cases {
            let wire = WireError::from(&e);
            let json = serde_json::to_string(&wire).unwrap();
            let back: EngineError = serde_json::from_str::<WireError>(&json).unwrap().into();
            assert_eq!(back.kind(), e.kind(), "{json}");
            assert_eq!(back.to_string(), e.to_string(), "{json}");
        }
    }
}
