//! Hot model swap with a canary: [`ModelVersions`] is a [`ChatModel`] wrapper holding the
//! serving version and, while a new one is tried, a candidate that gets a share of new
//! requests.
//!
//! A new version is loaded and warmed up in the background (its state says how far it
//! got); only a ready candidate takes traffic. `promote` makes it the serving version and
//! drops the old one — requests already streaming from the old version hold their own
//! reference and finish normally, so a swap fails no request. `rollback` drops the
//! candidate. Each request is counted per version (`moltbot_model_requests_total{version}`,
//! errors in `moltbot_model_errors_total{version}`).

use futures::StreamExt;
use moltbot_core::{ChatModel, ChatRequest, ChunkStream, ModelError};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use tokio_util::sync::CancellationToken;

/// Where a version stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum VersionState {
    Loading,
    Warming { done: u32, total: u32 },
    Ready,
    Failed { error: String },
}

/// One version as `GET /admin/models` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionInfo {
    /// `v1`, `v2`, …
    pub version: String,
    pub model: String,
    /// What it was loaded from (a GGUF path, a provider).
    pub source: String,
    pub role: &'static str,
    #[serde(flatten)]
    pub state: VersionState,
    /// Share of new requests it gets, in percent.
    pub traffic_percent: f64,
    pub requests: u64,
    pub errors: u64,
}

struct Version {
    name: String,
    source: String,
    model: Option<Arc<dyn ChatModel>>,
    state: VersionState,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
}

struct Inner {
    current: Version,
    candidate: Option<Version>,
    /// Percent of new requests that go to a ready candidate.
    weight: f64,
    loaded: u32,
    /// Spreads requests by the weight without a random source: request n goes to the
    /// candidate when the running share falls below the weight.
    sent: u64,
    to_candidate: u64,
}

/// The serving model versions. Cheap to share (`Arc`).
pub struct ModelVersions {
    // A std lock, held only to pick a version or change the set (never across an await).
    inner: RwLock<Inner>,
    /// The serving version's model id, as [`ChatModel::id`] returns it. Ids are leaked
    /// once per loaded version (a few bytes per admin load) so the trait can hand out a
    /// `&str` while versions change.
    id: RwLock<&'static str>,
}

/// Errors of the admin operations, with messages for the API.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VersionError {
    #[error("a new version ({0}) is already being tried; promote or roll it back first")]
    Busy(String),
    #[error("no new version is loaded")]
    NoCandidate,
    #[error("the new version ({version}) is not ready: {state}")]
    NotReady { version: String, state: String },
    #[error("`new_model_weight` must be a percentage between 0 and 100, got {0}")]
    BadWeight(f64),
}

impl ModelVersions {
    pub fn new(model: Arc<dyn ChatModel>, source: impl Into<String>) -> Arc<Self> {
        let id: &'static str = Box::leak(model.id().to_string().into_boxed_str());
        Arc::new(Self {
            inner: RwLock::new(Inner {
                current: Version {
                    name: "v1".into(),
                    source: source.into(),
                    model: Some(model),
                    state: VersionState::Ready,
                    counters: Arc::default(),
                },
                candidate: None,
                weight: 0.0,
                loaded: 1,
                sent: 0,
                to_candidate: 0,
            }),
            id: RwLock::new(id),
        })
    }

    /// Register a new version being loaded from `source`; returns its name. Fails while
    /// another new version is being tried.
    pub fn begin_load(&self, source: impl Into<String>) -> Result<String, VersionError> {
        let mut inner = self.write();
        if let Some(c) = &inner.candidate {
            if !matches!(c.state, VersionState::Failed { .. }) {
                return Err(VersionError::Busy(c.name.clone()));
            }
        }
        inner.loaded += 1;
        let name = format!("v{}", inner.loaded);
        inner.candidate = Some(Version {
            name: name.clone(),
            source: source.into(),
            model: None,
            state: VersionState::Loading,
            counters: Arc::default(),
        });
        inner.weight = 0.0;
        Ok(name)
    }

    /// Progress of version `name` (loading, warming, ready, failed); the model once built.
    pub fn update(&self, name: &str, state: VersionState, model: Option<Arc<dyn ChatModel>>) {
        let mut inner = self.write();
        if let Some(c) = inner.candidate.as_mut().filter(|c| c.name == name) {
            c.state = state;
            if model.is_some() {
                c.model = model;
            }
        }
    }

    /// The candidate's model, for warm-up requests that must not count as traffic.
    pub fn candidate_model(&self, name: &str) -> Option<Arc<dyn ChatModel>> {
        self.read()
            .candidate
            .as_ref()
            .filter(|c| c.name == name)
            .and_then(|c| c.model.clone())
    }

    /// Send `percent` of new requests to the candidate (0–100).
    pub fn set_weight(&self, percent: f64) -> Result<(), VersionError> {
        if !(0.0..=100.0).contains(&percent) || percent.is_nan() {
            return Err(VersionError::BadWeight(percent));
        }
        let mut inner = self.write();
        let Some(c) = &inner.candidate else {
            return Err(VersionError::NoCandidate);
        };
        if c.state != VersionState::Ready {
            return Err(VersionError::NotReady {
                version: c.name.clone(),
                state: format!("{:?}", c.state),
            });
        }
        inner.weight = percent;
        inner.sent = 0;
        inner.to_candidate = 0;
        Ok(())
    }

    /// Make the ready candidate the serving version; the old one is dropped once its
    /// running requests end.
    pub fn promote(&self) -> Result<String, VersionError> {
        let mut inner = self.write();
        let ready = matches!(
            inner.candidate.as_ref().map(|c| &c.state),
            Some(VersionState::Ready)
        );
        if !ready {
            return Err(match &inner.candidate {
                None => VersionError::NoCandidate,
                Some(c) => VersionError::NotReady {
                    version: c.name.clone(),
                    state: format!("{:?}", c.state),
                },
            });
        }
        let Some(new) = inner.candidate.take() else {
            return Err(VersionError::NoCandidate);
        };
        if let Some(m) = &new.model {
            *self.id.write().unwrap_or_else(PoisonError::into_inner) =
                Box::leak(m.id().to_string().into_boxed_str());
        }
        let name = new.name.clone();
        inner.current = new;
        inner.weight = 0.0;
        Ok(name)
    }

    /// Drop the candidate; all traffic goes to the serving version.
    pub fn rollback(&self) -> Result<String, VersionError> {
        let mut inner = self.write();
        let c = inner.candidate.take().ok_or(VersionError::NoCandidate)?;
        inner.weight = 0.0;
        Ok(c.name)
    }

    pub fn list(&self) -> Vec<VersionInfo> {
        let inner = self.read();
        let info = |v: &Version, role, share| VersionInfo {
            version: v.name.clone(),
            model: v
                .model
                .as_ref()
                .map(|m| m.id().to_string())
                .unwrap_or_default(),
            source: v.source.clone(),
            role,
            state: v.state.clone(),
            traffic_percent: share,
            requests: v.counters.requests.load(Ordering::Relaxed),
            errors: v.counters.errors.load(Ordering::Relaxed),
        };
        let candidate_share = match &inner.candidate {
            Some(c) if c.state == VersionState::Ready => inner.weight,
            _ => 0.0,
        };
        let mut out = vec![info(&inner.current, "current", 100.0 - candidate_share)];
        if let Some(c) = &inner.candidate {
            out.push(info(c, "candidate", candidate_share));
        }
        out
    }

    /// The version for the next request.
    fn pick(&self) -> (String, Arc<dyn ChatModel>, Arc<Counters>) {
        let mut inner = self.write();
        let weight = inner.weight;
        inner.sent += 1;
        let use_candidate = weight > 0.0
            && inner
                .candidate
                .as_ref()
                .is_some_and(|c| c.state == VersionState::Ready && c.model.is_some())
            && (inner.to_candidate as f64) < weight / 100.0 * inner.sent as f64;
        if use_candidate {
            inner.to_candidate += 1;
        }
        let v = match (&inner.candidate, use_candidate) {
            (Some(c), true) => c,
            _ => &inner.current,
        };
        let model = v.model.clone().expect(
            "the serving version always has a model; a candidate is picked only when built",
        );
        (v.name.clone(), model, v.counters.clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ChatModel for ModelVersions {
    fn id(&self) -> &str {
        *self.id.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn stream(&self, request: ChatRequest, cancel: CancellationToken) -> ChunkStream {
        let (version, model, counters) = self.pick();
        counters.requests.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("moltbot_model_requests_total", "version" => version.clone())
            .increment(1);
        let inner = model.stream(request, cancel);
        Box::pin(inner.inspect(move |item| {
            if let Err(e) = item {
                if !matches!(e, ModelError::Cancelled) {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("moltbot_model_errors_total", "version" => version.clone())
                        .increment(1);
                }
            }
        }))
        // `model` (the Arc) lives in the inner stream, so a version dropped by a swap
        // keeps serving this request to its end.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moltbot_core::{ChatChunk, FinishReason};

    struct Named(&'static str);

    impl ChatModel for Named {
        fn id(&self) -> &str {
            self.0
        }
        fn stream(&self, _request: ChatRequest, _cancel: CancellationToken) -> ChunkStream {
            let id = self.0;
            Box::pin(futures::stream::iter(vec![
                Ok(ChatChunk::Text(id.to_string())),
                Ok(ChatChunk::Finish(FinishReason::Stop)),
            ]))
        }
    }

    async fn answer(v: &ModelVersions) -> String {
        let c = moltbot_core::model::collect(v, ChatRequest::default(), CancellationToken::new())
            .await
            .unwrap();
        c.text
    }

    #[tokio::test]
    async fn a_candidate_gets_its_share_then_takes_over() {
        let v = ModelVersions::new(Arc::new(Named("old")), "config");
        assert_eq!(v.id(), "old");
        let name = v.begin_load("new.gguf").unwrap();
        assert_eq!(name, "v2");
        assert_eq!(v.begin_load("x"), Err(VersionError::Busy("v2".into())));
        // Not ready: no traffic can move to it.
        assert!(matches!(
            v.set_weight(10.0),
            Err(VersionError::NotReady { .. })
        ));
        v.update("v2", VersionState::Ready, Some(Arc::new(Named("new"))));
        assert_eq!(v.set_weight(101.0), Err(VersionError::BadWeight(101.0)));
        v.set_weight(10.0).unwrap();
        let mut new = 0;
        for _ in 0..100 {
            if answer(&v).await == "new" {
                new += 1;
            }
        }
        assert_eq!(new, 10);
        let list = v.list();
        assert_eq!(list[1].traffic_percent, 10.0);
        assert_eq!(list[1].requests, 10);
        assert_eq!(list[0].requests, 90);
        v.promote().unwrap();
        assert_eq!(v.id(), "new");
        assert_eq!(answer(&v).await, "new");
        assert_eq!(v.list().len(), 1);
        // Rollback of a later candidate leaves the serving version alone.
        v.begin_load("third").unwrap();
        v.update("v3", VersionState::Ready, Some(Arc::new(Named("third"))));
        v.set_weight(100.0).unwrap();
        assert_eq!(answer(&v).await, "third");
        assert_eq!(v.rollback().unwrap(), "v3");
        assert_eq!(answer(&v).await, "new");
    }
}
