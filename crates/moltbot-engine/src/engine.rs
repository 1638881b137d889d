//! [`Engine`]: runs turns.

use crate::agent::{ToolEvent, Toolbox, TurnTools};
use crate::bus::MessageBus;
use crate::router::{
    extractive_answer, grounding_prompt, is_supported, sources_footer, DialogueRouter, Plan,
    RouteInfo,
};
use crate::sessions::SessionMap;
use crate::{EngineError, ModelSlot, ModelState};
use futures::StreamExt;
use moltbot_core::{
    ChatChunk, ChatMessage, ChatRequest, FinishReason, ModelError, Origin, Role, ToolCallDelta,
    ToolContext, Usage,
};
use moltbot_knowledge::Hit;
use moltbot_store::{NewMessage, Store, StoredMessage, StoredReply, TurnRecord};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub system_prompt: String,
    /// Turns (user + assistant) of history fed to the model.
    pub max_turns: usize,
    pub max_message_chars: usize,
    pub default_max_tokens: u32,
    pub default_temperature: f32,
    pub hot_cache_sessions: usize,
    /// Approximate bytes of history kept in RAM across all sessions.
    pub hot_cache_bytes: usize,
    /// How long a turn waits for a model that is still loading.
    pub model_wait: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            system_prompt: "You are a helpful assistant.".into(),
            max_turns: 128,
            max_message_chars: 32_000,
            default_max_tokens: 256,
            default_temperature: 0.7,
            hot_cache_sessions: 4096,
            hot_cache_bytes: 64 << 20,
            model_wait: Duration::from_secs(60),
        }
    }
}

/// Per-request generation settings; `None` takes the configured default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Overrides {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub top_k: Option<u32>,
    pub repetition_penalty: Option<f32>,
    pub beam_width: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnRequest {
    pub session_id: String,
    /// Names this turn for idempotency: a turn id seen before is not run again; its stored
    /// reply is returned instead (a redelivered bus message, a client's retry with the same
    /// `Idempotency-Key`). `None` runs the turn unconditionally.
    #[serde(default)]
    pub turn_id: Option<String>,
    /// Names this turn in [`SessionEvent`]s; a fresh id is made when `None`.
    pub run_id: Option<String>,
    pub user: Option<String>,
    pub message: String,
    /// Where the turn came from (`http`, `openai`, `ws`, …), kept with the session.
    #[serde(deserialize_with = "moltbot_core::intern::de")]
    pub channel: moltbot_core::intern::Label,
    /// The chat a channel turn came from (reminders set in the turn are delivered there).
    pub origin: Option<Origin>,
    pub overrides: Overrides,
}

/// Streamed while a turn runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnEvent {
    /// New reply text to append.
    Delta(String),
    /// A tool call started or finished.
    Tool(ToolEvent),
}

/// What happens in a session, for watchers other than the turn's own caller (an OpenClaw
/// TUI subscribed to a session sees turns made over HTTP or from a channel).
#[derive(Debug, Clone)]
pub struct SessionEvent {
    pub session_id: String,
    pub run_id: String,
    pub channel: &'static str,
    pub kind: SessionEventKind,
}

#[derive(Debug, Clone)]
pub enum SessionEventKind {
    /// The user's message was accepted.
    User(String),
    /// New reply text.
    Delta(String),
    /// A tool call started or finished.
    Tool(ToolEvent),
    Final {
        reply: String,
        model: String,
        finish_reason: FinishReason,
    },
    Failed(String),
}

/// How long a turn waits for its caller to take the next piece of the reply.
pub(crate) const STALLED_READER: Duration = Duration::from_secs(30);

/// Events buffered per watcher; a watcher that falls further behind skips ahead.
const EVENT_BUFFER: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnOutcome {
    pub session_id: String,
    pub reply: String,
    pub model: String,
    pub usage: Usage,
    pub finish_reason: FinishReason,
    pub latency_ms: f64,
    /// How the turn was answered (session turns only; stateless completions always go to
    /// the model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteInfo>,
    /// Tool calls made while answering (start and result of each), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolEvent>,
}

/// Who writes a turn's reply.
enum Writer {
    /// Already written (a template, or passages quoted extractively).
    Direct(String),
    /// The model, with this request; for a grounded answer, the passages to check its
    /// reply against and to name under it.
    Model(ChatRequest, Option<Vec<Hit>>),
    /// The model with tools (the agent loop).
    Agent(ChatRequest, TurnTools),
}

/// The id recorded as the "model" of replies written without one.
pub const ROUTER_MODEL_ID: &str = "moltbot-router";

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    model: ModelSlot,
    opts: EngineOptions,
    sessions: SessionMap,
    events: tokio::sync::broadcast::Sender<SessionEvent>,
    /// Set once understanding and knowledge have loaded (in the background, after the
    /// gateway is up); until then every turn goes to the model.
    router: std::sync::RwLock<Option<Arc<DialogueRouter>>>,
    /// Tools for the agent loop; without them every turn is plain generation.
    toolbox: std::sync::RwLock<Option<Arc<Toolbox>>>,
    /// Where turns go to be run; `None` runs them here.
    bus: std::sync::RwLock<Option<Arc<dyn MessageBus>>>,
}

/// Decrements the in-flight gauge when a turn ends, however it ends.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!("moltbot_concurrent_users").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("moltbot_concurrent_users").decrement(1.0);
    }
}

impl Engine {
    pub fn new(store: Store, model: ModelSlot, opts: EngineOptions) -> Self {
        let sessions = SessionMap::with_budget(opts.hot_cache_sessions, opts.hot_cache_bytes);
        Self {
            inner: Arc::new(Inner {
                store,
                model,
                opts,
                sessions,
                events: tokio::sync::broadcast::Sender::new(EVENT_BUFFER),
                router: std::sync::RwLock::new(None),
                toolbox: std::sync::RwLock::new(None),
                bus: std::sync::RwLock::new(None),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn model(&self) -> &ModelSlot {
        &self.inner.model
    }

    pub fn options(&self) -> &EngineOptions {
        &self.inner.opts
    }

    /// Install (or replace) the decision router; turns started afterwards use it.
    pub fn set_router(&self, router: Arc<DialogueRouter>) {
        *self
            .inner
            .router
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(router);
    }

    /// Install (or replace) the tools; turns started afterwards may use them.
    pub fn set_toolbox(&self, toolbox: Arc<Toolbox>) {
        *self
            .inner
            .toolbox
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(toolbox);
    }

    pub fn toolbox(&self) -> Option<Arc<Toolbox>> {
        self.inner
            .toolbox
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Send every turn through `bus` from now on (scale-out); the bus runs them on
    /// whichever replica owns their session with [`Engine::turn_here`].
    pub fn set_bus(&self, bus: Arc<dyn MessageBus>) {
        *self
            .inner
            .bus
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(bus);
    }

    pub fn bus(&self) -> Option<Arc<dyn MessageBus>> {
        self.inner
            .bus
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Drop the cached histories no turn is using; the next turn of each reads the store.
    /// For when sessions may have been served elsewhere (a bus rebalance).
    pub fn forget_cached_sessions(&self) {
        self.inner.sessions.forget_idle();
    }

    /// The hot session cache: `(sessions, limit, bytes, budget_bytes)`. Sessions a turn is
    /// using are never evicted, so the size may pass the limit by the turns in flight.
    pub fn session_cache_usage(&self) -> (usize, usize, usize, usize) {
        self.inner.sessions.usage()
    }

    pub fn router(&self) -> Option<Arc<DialogueRouter>> {
        self.inner
            .router
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Understand and route one turn off the async workers. Never fails: without a router
    /// (or if it panics) the turn goes to the model.
    async fn route(&self, text: &str, in_conversation: bool) -> (RouteInfo, Plan) {
        let Some(router) = self.router() else {
            return (
                RouteInfo::unrouted("understanding_unavailable"),
                Plan::Model,
            );
        };
        let text = text.to_string();
        let model_ready = matches!(self.inner.model.state(), ModelState::Ready(_));
        let decided =
            tokio::task::spawn_blocking(move || router.decide(&text, in_conversation, model_ready))
                .await;
        let (info, plan) = decided.unwrap_or_else(|e| {
            tracing::error!(cause = %e, "the router failed; the turn goes to the model");
            (
                RouteInfo::unrouted("understanding_unavailable"),
                Plan::Model,
            )
        });
        metrics::counter!("moltbot_route_total", "route" => info.route.as_str(), "reason" => info.reason)
            .increment(1);
        metrics::histogram!("moltbot_route_latency").record(info.route_ms);
        tracing::info!(
            route = info.route.as_str(),
            reason = info.reason,
            intent = info.intent.as_deref().unwrap_or("-"),
            confidence = info.confidence.unwrap_or(f32::NAN),
            surprise = info.surprise.unwrap_or(f32::NAN),
            citations = info.citations.len(),
            route_ms = info.route_ms,
            "turn routed"
        );
        (info, plan)
    }

    /// Deliver text written without the model as if it had been streamed. A caller that
    /// went away still gets the turn stored, as with the model.
    pub(crate) async fn direct(
        &self,
        text: &str,
        events: Option<mpsc::Sender<TurnEvent>>,
        watch: Watch<'_>,
    ) {
        self.publish(|| watch.event(SessionEventKind::Delta(text.to_string())));
        if let Some(tx) = events {
            let delta = TurnEvent::Delta(text.to_string());
            let _ = tokio::time::timeout(STALLED_READER, tx.send(delta)).await;
        }
    }

    /// Watch every session's turns as they happen.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<SessionEvent> {
        self.inner.events.subscribe()
    }

    pub(crate) fn publish(&self, event: impl FnOnce() -> SessionEvent) {
        // Skip building the event when nobody watches (the common case).
        if self.inner.events.receiver_count() > 0 {
            let _ = self.inner.events.send(event());
        }
    }

    /// Check a user message against the limits; the error names field, limit and value.
    pub fn validate_message(&self, field: &str, message: &str) -> Result<(), EngineError> {
        if message.trim().is_empty() {
            return Err(EngineError::InvalidInput(format!(
                "`{field}` must not be empty"
            )));
        }
        let max = self.inner.opts.max_message_chars;
        let n = message.chars().count();
        if n > max {
            return Err(EngineError::InvalidInput(format!(
                "`{field}` must be at most {max} characters, got {n}"
            )));
        }
        Ok(())
    }

    /// Run one turn of a persistent session. Deltas go to `events` (if given); if that
    /// receiver goes away, or `cancel` fires, generation stops. Turns of one session run one
    /// at a time, in arrival order. With a bus set, the turn runs on the replica that owns
    /// its session and its events and outcome come back here.
    pub async fn turn(
        &self,
        mut req: TurnRequest,
        events: Option<mpsc::Sender<TurnEvent>>,
        cancel: CancellationToken,
    ) -> Result<TurnOutcome, EngineError> {
        let Some(bus) = self.bus() else {
            return self.turn_here(req, events, cancel).await;
        };
        // Refused here, before it travels.
        self.validate_message("message", &req.message)?;
        req.turn_id
            .get_or_insert_with(|| format!("turn-{}", uuid::Uuid::new_v4()));
        bus.submit(req, events, cancel).await
    }

    /// [`Engine::turn`] in this process, whatever the bus. A turn with a `turn_id` whose
    /// reply is already stored is not run again: the stored reply is streamed and returned;
    /// one whose user message is stored but not its reply (the replica died mid-turn) is
    /// run without storing the message twice.
    pub async fn turn_here(
        &self,
        req: TurnRequest,
        events: Option<mpsc::Sender<TurnEvent>>,
        cancel: CancellationToken,
    ) -> Result<TurnOutcome, EngineError> {
        self.validate_message("message", &req.message)?;
        let started = Instant::now();
        let _inflight = InFlight::start();
        let run_id = req
            .run_id
            .clone()
            .unwrap_or_else(|| format!("run-{}", uuid::Uuid::new_v4()));
        let slot = self.inner.sessions.slot(&req.session_id);
        // Wait for this session's previous turn, unless the caller gives up first.
        let mut history = tokio::select! {
            guard = slot.history.lock() => guard,
            () = cancel.cancelled() => return Err(ModelError::Cancelled.into()),
        };
        // Under the session's lock, so a duplicate of a running turn waits for it; before
        // the history, which a turn answered already does not need.
        let seen = match &req.turn_id {
            Some(id) => self.inner.store.turn_record(id).await?,
            None => TurnRecord::default(),
        };
        if let Some(reply) = seen.reply {
            drop(history);
            return Ok(self.replay(&req, &run_id, reply, events, started).await);
        }
        // The hot history cache: a hit skips reading the session from the store.
        let cache = if history.is_some() { "hit" } else { "miss" };
        metrics::counter!("moltbot_session_cache_total", "result" => cache).increment(1);
        if history.is_none() {
            let rows = self
                .inner
                .store
                .recent_messages(&req.session_id, self.inner.opts.max_turns * 2)
                .await?;
            *history = Some(rows.into_iter().map(to_chat).collect());
        }
        let past = history.get_or_insert_with(VecDeque::new);

        // The user's message is accepted from here on: it is persisted even if the model
        // fails. The write runs while the model starts (it commits in the store's next group)
        // and is awaited before the reply is stored, so ids stay in order. A message stored
        // by an earlier delivery of this turn is already in the history.
        let persist_user = async {
            if seen.user_stored {
                return Ok(());
            }
            self.inner
                .store
                .append_turn(
                    &req.session_id,
                    req.user.as_deref(),
                    req.channel,
                    req.turn_id.as_deref(),
                    vec![NewMessage::new(Role::User, req.message.clone())],
                )
                .await
        };
        if !seen.user_stored {
            push_bounded(
                past,
                ChatMessage::new(Role::User, req.message.clone()),
                self.inner.opts.max_turns * 2,
            );
        }
        // The message just pushed does not count: is there an earlier exchange?
        let in_conversation = past.iter().rev().skip(1).any(|m| m.role == Role::Assistant);
        let (mut route, plan) = self.route(&req.message, in_conversation).await;
        let watch = Watch {
            session_id: &req.session_id,
            run_id: &run_id,
            channel: req.channel,
        };
        let writer = match plan {
            Plan::Reply(text) => Writer::Direct(text),
            Plan::Model => {
                let request = self.session_request(past, None, &req.overrides);
                match self.turn_tools(
                    &req.message,
                    route.tool.as_deref(),
                    &route.tool_args,
                    route.tool_fields.as_ref(),
                ) {
                    Some(tools) => Writer::Agent(request, tools),
                    None => Writer::Model(request, None),
                }
            }
            Plan::Ground(passages) => {
                // Answers from passages are sampled no hotter than `grounded_temperature`
                // unless the caller set a temperature: at chat's 0.7 the small local model
                // often drifted from the passage to what it believed instead.
                let grounded = self.router().map(|r| {
                    r.config()
                        .grounded_temperature
                        .min(self.inner.opts.default_temperature)
                });
                let overrides = Overrides {
                    temperature: req.overrides.temperature.or(grounded),
                    ..req.overrides.clone()
                };
                Writer::Model(
                    self.session_request(past, Some(&passages), &overrides),
                    Some(passages),
                )
            }
        };
        self.publish(|| watch.event(SessionEventKind::User(req.message.clone())));
        let answer = async {
            let (request, grounded) = match writer {
                Writer::Direct(text) => {
                    self.direct(&text, events, watch).await;
                    let gathered = Gathered {
                        text,
                        ..Gathered::default()
                    };
                    return Ok::<_, EngineError>((
                        ROUTER_MODEL_ID.to_string(),
                        gathered,
                        None,
                        Vec::new(),
                    ));
                }
                Writer::Agent(request, tools) => {
                    let ctx = ToolContext {
                        session_id: req.session_id.clone(),
                        user: req.user.clone(),
                        origin: req.origin.clone(),
                        request: Some(req.message.clone()),
                        cancel: cancel.clone(),
                        timeout: Duration::from_secs(60),
                    };
                    let run = self
                        .run_agent(request, tools, ctx, events, cancel, watch)
                        .await?;
                    return Ok((run.model_id, run.gathered, None, run.steps));
                }
                Writer::Model(request, grounded) => (request, grounded),
            };
            let footer_events = grounded.as_ref().and(events.clone());
            let (id, mut gathered) = self.generate(request, events, cancel, Some(watch)).await?;
            let mut checked = None;
            if let Some(passages) = &grounded {
                // A reply that does not draw on the passages is followed by the passages
                // themselves, quoted, so the user still gets the facts.
                let supported = is_supported(&gathered.text, passages);
                let footer = if supported {
                    sources_footer(&req.message, passages)
                } else {
                    format!("\n\n{}", extractive_answer(&req.message, passages))
                };
                // Streamed like the rest of the reply, after it.
                self.direct(&footer, footer_events, watch).await;
                gathered.text.push_str(&footer);
                checked = Some(supported);
            }
            Ok((id, gathered, checked, Vec::new()))
        };
        let (stored, generated) = tokio::join!(persist_user, answer);
        if let Err(e) = stored {
            // The cache must never hold what the store does not: reload on the next turn.
            *history = None;
            self.publish(|| watch.event(SessionEventKind::Failed(e.to_string())));
            return Err(e.into());
        }
        let (model_id, completion, tool_steps) = match generated {
            Ok((id, g, checked, steps)) => {
                if checked == Some(false) {
                    route.grounding = Some("model_then_quotes");
                }
                (id, g, steps)
            }
            Err(e) => {
                self.publish(|| watch.event(SessionEventKind::Failed(e.to_string())));
                return Err(e);
            }
        };

        let reply = NewMessage {
            role: Role::Assistant,
            content: completion.text.clone(),
            model: Some(model_id.clone()),
            prompt_tokens: Some(completion.usage.prompt_tokens),
            completion_tokens: Some(completion.usage.completion_tokens),
        };
        self.inner
            .store
            .append_turn(
                &req.session_id,
                req.user.as_deref(),
                req.channel,
                req.turn_id.as_deref(),
                vec![reply],
            )
            .await?;
        push_bounded(
            past,
            ChatMessage::new(Role::Assistant, completion.text.clone()),
            self.inner.opts.max_turns * 2,
        );
        self.inner
            .sessions
            .account(&slot, crate::sessions::history_bytes(past));
        self.publish(|| {
            watch.event(SessionEventKind::Final {
                reply: completion.text.clone(),
                model: model_id.clone(),
                finish_reason: completion.finish_reason,
            })
        });
        Ok(TurnOutcome {
            session_id: req.session_id,
            reply: completion.text,
            model: model_id,
            usage: completion.usage,
            finish_reason: completion.finish_reason,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            route: Some(route),
            tools: tool_steps,
        })
    }

    /// The outcome of a turn answered before (same `turn_id`): its stored reply, streamed to
    /// `events` as one piece.
    async fn replay(
        &self,
        req: &TurnRequest,
        run_id: &str,
        reply: StoredReply,
        events: Option<mpsc::Sender<TurnEvent>>,
        started: Instant,
    ) -> TurnOutcome {
        metrics::counter!("moltbot_turn_replayed_total").increment(1);
        tracing::info!(
            session = %req.session_id,
            turn_id = req.turn_id.as_deref().unwrap_or("-"),
            "turn seen before: its stored reply is sent again"
        );
        let watch = Watch {
            session_id: &req.session_id,
            run_id,
            channel: req.channel,
        };
        self.direct(&reply.content, events, watch).await;
        TurnOutcome {
            session_id: req.session_id.clone(),
            reply: reply.content,
            model: reply.model.unwrap_or_else(|| ROUTER_MODEL_ID.to_string()),
            usage: Usage {
                prompt_tokens: reply.prompt_tokens.unwrap_or(0),
                completion_tokens: reply.completion_tokens.unwrap_or(0),
            },
            finish_reason: FinishReason::Stop,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            route: Some(RouteInfo::unrouted("redelivered")),
            tools: Vec::new(),
        }
    }

    /// A stateless completion over caller-supplied messages (the OpenAI endpoint without a
    /// session). The configured system prompt is added when the caller gave none.
    pub async fn complete(
        &self,
        mut messages: Vec<ChatMessage>,
        overrides: &Overrides,
        events: Option<mpsc::Sender<TurnEvent>>,
        cancel: CancellationToken,
    ) -> Result<TurnOutcome, EngineError> {
        let started = Instant::now();
        let _inflight = InFlight::start();
        if !messages.iter().any(|m| m.role == Role::System) {
            messages.insert(
                0,
                ChatMessage::new(Role::System, self.inner.opts.system_prompt.clone()),
            );
        }
        let request = self.request(messages, overrides);
        let (model, completion) = self.generate(request, events, cancel, None).await?;
        Ok(TurnOutcome {
            session_id: String::new(),
            reply: completion.text,
            model,
            usage: completion.usage,
            finish_reason: completion.finish_reason,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            route: None,
            tools: Vec::new(),
        })
    }

    /// The model's request for a session turn: the system prompt (with the passages of a
    /// grounded answer appended) and the session's history.
    fn session_request(
        &self,
        past: &VecDeque<ChatMessage>,
        passages: Option<&[Hit]>,
        o: &Overrides,
    ) -> ChatRequest {
        let mut system = self.inner.opts.system_prompt.clone();
        if let Some(passages) = passages {
            system.push_str("\n\n");
            system.push_str(&grounding_prompt(passages));
        }
        let mut messages = Vec::with_capacity(past.len() + 1);
        messages.push(ChatMessage::new(Role::System, system));
        messages.extend(past.iter().cloned());
        self.request(messages, o)
    }

    fn request(&self, messages: Vec<ChatMessage>, o: &Overrides) -> ChatRequest {
        ChatRequest {
            messages,
            max_tokens: Some(o.max_tokens.unwrap_or(self.inner.opts.default_max_tokens)),
            temperature: Some(o.temperature.unwrap_or(self.inner.opts.default_temperature)),
            top_p: o.top_p,
            seed: o.seed,
            stop: o.stop.clone(),
            tools: Vec::new(),
            tool_choice: moltbot_core::ToolChoice::Auto,
            tool_arguments: serde_json::Map::new(),
            tool_fields: None,
            top_k: o.top_k,
            repetition_penalty: o.repetition_penalty,
            beam_width: o.beam_width,
        }
    }

    pub(crate) async fn generate(
        &self,
        request: ChatRequest,
        events: Option<mpsc::Sender<TurnEvent>>,
        cancel: CancellationToken,
        watch: Option<Watch<'_>>,
    ) -> Result<(String, Gathered), EngineError> {
        let model = tokio::select! {
            m = self.inner.model.get(self.inner.opts.model_wait) => m.map_err(EngineError::NotReady)?,
            () = cancel.cancelled() => return Err(ModelError::Cancelled.into()),
        };
        let model_id = model.id().to_string();
        let started = Instant::now();
        let mut first_token: Option<Duration> = None;
        // Generation is owned by this turn: a child token lets us stop it when the event
        // receiver disappears without cancelling the caller's token.
        let gen_cancel = cancel.child_token();
        let _stop_on_exit = gen_cancel.clone().drop_guard();
        let mut stream = model.stream(request, gen_cancel.clone());
        let mut out = Gathered::default();
        let result: Result<(), ModelError> = async {
            while let Some(chunk) = stream.next().await {
                match chunk? {
                    ChatChunk::Text(t) => {
                        if t.is_empty() {
                            continue;
                        }
                        first_token.get_or_insert_with(|| started.elapsed());
                        out.text.push_str(&t);
                        if let Some(w) = &watch {
                            self.publish(|| w.event(SessionEventKind::Delta(t.clone())));
                        }
                        if let Some(tx) = &events {
                            // A receiver that is gone or stops reading (and is then
                            // cancelled) ends generation.
                            // A receiver that stops reading for this long (a stalled SSE
                            // client) counts as gone: the turn must not hold its session.
                            let sent = tokio::select! {
                                r = tokio::time::timeout(STALLED_READER, tx.send(TurnEvent::Delta(t))) => {
                                    matches!(r, Ok(Ok(())))
                                }
                                () = gen_cancel.cancelled() => false,
                            };
                            if !sent {
                                gen_cancel.cancel();
                                return Err(ModelError::Cancelled);
                            }
                        }
                    }
                    ChatChunk::Usage(u) => out.usage = u,
                    ChatChunk::Finish(r) => out.finish_reason = r,
                    ChatChunk::ToolCall(d) => moltbot_core::model::merge_tool_call(&mut out.tool_calls, d),
                }
            }
            Ok(())
        }
        .await;
        let elapsed = started.elapsed();
        metrics::histogram!("moltbot_inference_latency").record(elapsed.as_secs_f64() * 1e3);
        if let Some(ttft) = first_token {
            metrics::histogram!("moltbot_time_to_first_token").record(ttft.as_secs_f64() * 1e3);
        }
        // Errors are counted once, where they reach the client (gateway, channel).
        result?;
        metrics::counter!("moltbot_generated_tokens_total")
            .increment(u64::from(out.usage.completion_tokens));
        Ok((model_id, out))
    }

    /// The last `limit` messages of a session, oldest first.
    pub async fn history(
        &self,
        session_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, EngineError> {
        Ok(self.inner.store.recent_messages(session_id, limit).await?)
    }

    /// Append an assistant message to a session without a user turn (a scheduled job's
    /// result); it waits for the session's running turn and keeps the hot cache in step.
    pub async fn post(
        &self,
        session_id: &str,
        channel: &'static str,
        text: &str,
    ) -> Result<(), EngineError> {
        self.validate_message("text", text)?;
        let slot = self.inner.sessions.slot(session_id);
        let mut history = slot.history.lock().await;
        self.inner
            .store
            .append(
                session_id,
                None,
                channel,
                vec![NewMessage::new(Role::Assistant, text.to_string())],
            )
            .await?;
        if let Some(past) = history.as_mut() {
            push_bounded(
                past,
                ChatMessage::new(Role::Assistant, text.to_string()),
                self.inner.opts.max_turns * 2,
            );
            self.inner
                .sessions
                .account(&slot, crate::sessions::history_bytes(past));
        }
        let run_id = format!("post-{}", uuid::Uuid::new_v4());
        let watch = Watch {
            session_id,
            run_id: &run_id,
            channel,
        };
        self.publish(|| {
            watch.event(SessionEventKind::Final {
                reply: text.to_string(),
                model: ROUTER_MODEL_ID.to_string(),
                finish_reason: FinishReason::Stop,
            })
        });
        Ok(())
    }

    /// Delete a session's history.
    pub async fn reset_session(&self, session_id: &str) -> Result<bool, EngineError> {
        let slot = self.inner.sessions.slot(session_id);
        let mut history = slot.history.lock().await;
        let existed = self.inner.store.delete_session(session_id).await?;
        *history = Some(VecDeque::new());
        Ok(existed)
    }
}

/// Which session and run a generation belongs to, for [`SessionEvent`]s.
#[derive(Clone, Copy)]
pub(crate) struct Watch<'a> {
    session_id: &'a str,
    run_id: &'a str,
    channel: &'static str,
}

impl Watch<'_> {
    pub(crate) fn event(&self, kind: SessionEventKind) -> SessionEvent {
        SessionEvent {
            session_id: self.session_id.to_string(),
            run_id: self.run_id.to_string(),
            channel: self.channel,
            kind,
        }
    }
}

pub(crate) struct Gathered {
    pub text: String,
    pub usage: Usage,
    pub finish_reason: FinishReason,
    /// Tool calls the model asked for, fragments joined.
    pub tool_calls: Vec<ToolCallDelta>,
}

impl Default for Gathered {
    fn default() -> Self {
        Self {
            text: String::new(),
            usage: Usage::default(),
            finish_reason: FinishReason::Stop,
            tool_calls: Vec::new(),
        }
    }
}

fn to_chat(m: StoredMessage) -> ChatMessage {
    ChatMessage::new(m.role, m.content)
}

fn push_bounded(q: &mut VecDeque<ChatMessage>, m: ChatMessage, max: usize) {
    q.push_back(m);
    while q.len() > max {
        q.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moltbot_core::{ChatModel, ChunkStream};
    use std::sync::Mutex;

    /// A deterministic in-process model for engine unit tests: it answers with the number of
    /// messages it was given and records every request. (Provider behaviour over the wire is
    /// tested against real loopback servers in moltbot-models.)
    struct CountingModel {
        seen: Mutex<Vec<ChatRequest>>,
    }

    impl ChatModel for CountingModel {
        fn id(&self) -> &str {
            "test/counting"
        }
        fn stream(&self, request: ChatRequest, _cancel: CancellationToken) -> ChunkStream {
            let n = request.messages.len();
            self.seen.lock().unwrap().push(request);
            Box::pin(async_stream::stream! {
                yield Ok(ChatChunk::Text(format!("saw {n} ")));
                yield Ok(ChatChunk::Text("messages".into()));
                yield Ok(ChatChunk::Usage(Usage { prompt_tokens: 3, completion_tokens: 2 }));
                yield Ok(ChatChunk::Finish(FinishReason::Stop));
            })
        }
    }

    /// Streams many pieces, to fill a reader's queue.
    struct ChattyModel;

    impl ChatModel for ChattyModel {
        fn id(&self) -> &str {
            "test/chatty"
        }
        fn stream(&self, _request: ChatRequest, _cancel: CancellationToken) -> ChunkStream {
            Box::pin(async_stream::stream! {
                for i in 0..200 {
                    yield Ok(ChatChunk::Text(format!("{i} ")));
                }
                yield Ok(ChatChunk::Finish(FinishReason::Stop));
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_reading_ends_the_turn_and_frees_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        let engine = Engine::new(
            store,
            ModelSlot::ready(Arc::new(ChattyModel)),
            EngineOptions::default(),
        );
        // A reader that takes nothing: its queue fills, then the turn gives up (in virtual
        // time: the runtime's clock is paused and jumps to the timeout).
        let (tx, _never_read) = mpsc::channel(1);
        let err = engine
            .turn(turn("s", "talk"), Some(tx), CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, EngineError::Model(ModelError::Cancelled)),
            "{err:?}"
        );
        // The session is free again and the user's message was kept.
        let out = engine
            .turn(turn("s", "again"), None, CancellationToken::new())
            .await
            .unwrap();
        assert!(out.reply.starts_with("0 1 2"));
        let stored = engine.history("s", 10).await.unwrap();
        assert_eq!(stored[0].content, "talk");
    }

    fn engine(dir: &std::path::Path, max_turns: usize) -> (Engine, Arc<CountingModel>) {
        let model = Arc::new(CountingModel {
            seen: Mutex::new(Vec::new()),
        });
        let store = Store::open(&dir.join("m.db")).unwrap();
        let opts = EngineOptions {
            max_turns,
            ..EngineOptions::default()
        };
        (
            Engine::new(store, ModelSlot::ready(model.clone()), opts),
            model,
        )
    }

    fn turn(session: &str, msg: &str) -> TurnRequest {
        TurnRequest {
            turn_id: None,
            session_id: session.into(),
            run_id: None,
            user: None,
            message: msg.into(),
            channel: "test",
            origin: None,
            overrides: Overrides::default(),
        }
    }

    #[tokio::test]
    async fn history_grows_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, model) = engine(dir.path(), 2);
        for i in 0..4 {
            let out = engine
                .turn(turn("s", &format!("q{i}")), None, CancellationToken::new())
                .await
                .unwrap();
            assert!(out.reply.starts_with("saw "));
        }
        let seen = model.seen.lock().unwrap();
        // system + at most 2 turns (4 messages) of history, the newest being the question.
        let last = seen.last().unwrap();
        assert_eq!(last.messages.len(), 5);
        assert_eq!(last.messages[0].role, Role::System);
        assert_eq!(last.messages.last().unwrap().content, "q3");
        assert_eq!(seen[0].messages.len(), 2);
    }

    #[tokio::test]
    async fn a_turn_id_runs_once_and_a_half_stored_turn_is_finished_once() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, model) = engine(dir.path(), 128);
        let with_id = |msg: &str, id: &str| TurnRequest {
            turn_id: Some(id.to_string()),
            ..turn("s", msg)
        };
        let first = engine
            .turn(with_id("hello", "t1"), None, CancellationToken::new())
            .await
            .unwrap();
        // The same turn again (a redelivery): the stored reply, streamed, no model call.
        let (tx, mut rx) = mpsc::channel(8);
        let again = engine
            .turn(with_id("hello", "t1"), Some(tx), CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(again.reply, first.reply);
        assert_eq!(again.route.as_ref().unwrap().reason, "redelivered");
        assert_eq!(rx.recv().await, Some(TurnEvent::Delta(first.reply.clone())));
        assert_eq!(model.seen.lock().unwrap().len(), 1);
        let stored = engine.store().recent_messages("s", 10).await.unwrap();
        assert_eq!(stored.len(), 2);

        // A replica that died after storing the user message: the turn is run once more,
        // with the message in the history once.
        engine
            .store()
            .append_turn(
                "s",
                None,
                "http",
                Some("t2"),
                vec![NewMessage::new(Role::User, "second")],
            )
            .await
            .unwrap();
        engine.forget_cached_sessions();
        let out = engine
            .turn(with_id("second", "t2"), None, CancellationToken::new())
            .await
            .unwrap();
        // system + hello + reply + second: the user message was not added twice.
        assert_eq!(out.reply, "saw 4 messages");
        let stored = engine.store().recent_messages("s", 10).await.unwrap();
        let contents: Vec<&str> = stored.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(
            contents,
            ["hello", "saw 2 messages", "second", "saw 4 messages"]
        );
    }

    #[tokio::test]
    async fn history_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (engine, _) = engine(dir.path(), 128);
            engine
                .turn(turn("s", "remember me"), None, CancellationToken::new())
                .await
                .unwrap();
        }
        let (engine, model) = engine(dir.path(), 128);
        engine
            .turn(turn("s", "again"), None, CancellationToken::new())
            .await
            .unwrap();
        let seen = model.seen.lock().unwrap();
        let contents: Vec<&str> = seen[0]
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(contents[1], "remember me");
        assert_eq!(contents.len(), 4);
    }

    #[tokio::test]
    async fn deltas_are_streamed_and_limits_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine(dir.path(), 8);
        let (tx, mut rx) = mpsc::channel(8);
        let out = engine
            .turn(turn("s", "hi"), Some(tx), CancellationToken::new())
            .await
            .unwrap();
        let mut streamed = String::new();
        while let Some(TurnEvent::Delta(d)) = rx.recv().await {
            streamed.push_str(&d);
        }
        assert_eq!(streamed, out.reply);
        let err = engine
            .turn(turn("s", "   "), None, CancellationToken::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("must not be empty"));
        let long = "x".repeat(40_000);
        let err = engine
            .turn(turn("s", &long), None, CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("at most 32000") && err.contains("got 40000"),
            "{err}"
        );
    }
}
