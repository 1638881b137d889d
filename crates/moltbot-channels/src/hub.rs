//! [`ChannelHub`]: every message from every platform goes through here.
//!
//! ```text
//! adapter ──accept──▶ inbox (store) ──▶ dispatcher ──▶ one worker per session
//!                                                        │ group policy, pairing gate
//!                                                        │ typing… while the turn runs
//!                                                        ▼
//!                       outbox (store) ◀── split reply + close the inbox row, one commit
//!                            │
//!                            ▼ outbox loop: send, retry with backoff, give up after N
//!                         adapter.send
//! ```
//!
//! The store is the queue: an adapter's `accept` returns once the messages are committed,
//! and the dispatcher reads pending rows back from the store. After a crash or restart the
//! pending rows are simply read again, so an accepted message is always answered, and the
//! inbox's unique key means a redelivered one is answered once. A reply is in the outbox
//! before its inbox row is closed (same transaction), and outbox rows are marked sent only
//! after the platform confirmed them.

use crate::pairing::{self, Access, Gate};
use crate::text::split_message;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use moltbot_core::config::{ChannelsConfig, DmPolicy, GroupPolicy, SessionScope};
use moltbot_core::{
    Channel, ChannelError, ChannelState, Failure, Inbound, InboundSink, Supervisor,
};
use moltbot_engine::{Engine, EngineError, Overrides, TurnRequest};
use moltbot_store::{InboxRow, NewOutbox, OutboxRow, Store, StoreError};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the dispatcher and the outbox look at the store even without a wake-up (rows
/// written by another process: `moltbot pairing approve`, `moltbot message send`).
const POLL_EVERY: Duration = Duration::from_secs(2);
/// How often "typing…" is renewed while a turn runs (Telegram shows it for 5 s).
const TYPING_EVERY: Duration = Duration::from_secs(4);
/// Outbox messages sent at once (each to a different chat).
const SEND_CONCURRENCY: usize = 8;
/// Pending inbox rows read per dispatcher pass.
const PENDING_BATCH: usize = 256;
/// How long a claim on an inbox or outbox row holds when its owner stops renewing it (the
/// process died): then another replica takes the row over. Renewed every [`POLL_EVERY`].
const CLAIM_LEASE: Duration = Duration::from_secs(60);
/// How often finished inbox rows and sent outbox rows past retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn internal(e: StoreError) -> ChannelError {
    ChannelError::Internal(e.to_string())
}

/// The [`InboundSink`] adapters deliver to: commits to the store, then wakes the hub.
pub struct HubSink {
    store: Store,
    wake: Notify,
}

impl HubSink {
    pub fn new(store: Store) -> Arc<HubSink> {
        Arc::new(HubSink {
            store,
            wake: Notify::new(),
        })
    }
}

impl InboundSink for HubSink {
    fn accept<'a>(
        &'a self,
        channel: &'a str,
        batch: Vec<Inbound>,
        cursor: Option<moltbot_core::channel::Cursor>,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            let received = batch.len();
            let fresh = self
                .store
                .inbox_accept(channel, batch, cursor.map(|c| (c.key, c.value)))
                .await
                .map_err(internal)?;
            let label = metric_channel(channel);
            metrics::counter!("moltbot_channel_messages_received_total", "channel" => label)
                .increment(fresh.len() as u64);
            let repeated = received - fresh.len();
            if repeated > 0 {
                metrics::counter!("moltbot_channel_duplicates_total", "channel" => label)
                    .increment(repeated as u64);
                tracing::debug!(channel, repeated, "redelivered messages ignored");
            }
            if !fresh.is_empty() {
                self.wake.notify_one();
            }
            Ok(())
        })
    }

    fn cursor<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ChannelError>> {
        Box::pin(async move { self.store.cursor_get(channel, key).await.map_err(internal) })
    }

    fn save_cursor<'a>(
        &'a self,
        channel: &'a str,
        cursor: moltbot_core::channel::Cursor,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            self.store
                .cursor_set(channel, &cursor.key, &cursor.value)
                .await
                .map_err(internal)
        })
    }
}

/// Channel kinds are a small fixed set; anything else is labelled `other` in metrics.
fn metric_channel(kind: &str) -> &'static str {
    match kind {
        "telegram" => "telegram",
        "whatsapp" => "whatsapp",
        "discord" => "discord",
        "slack" => "slack",
        _ => "other",
    }
}

/// One channel's status, for `/health` and `moltbot channels status`.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelStatus {
    pub channel: &'static str,
    #[serde(flatten)]
    pub state: ChannelState,
    pub dm_policy: DmPolicy,
    pub outbox_pending: i64,
    pub outbox_failed: i64,
}

/// Rules of one channel, from config.
#[derive(Debug, Clone)]
struct Rules {
    access: Access,
    groups: GroupPolicy,
}

fn rules_for(cfg: &ChannelsConfig, kind: &str) -> Rules {
    let (policy, allow_from, groups) = match kind {
        "telegram" => (
            cfg.telegram.dm_policy,
            &cfg.telegram.allow_from,
            cfg.telegram.groups,
        ),
        "whatsapp" => (
            cfg.whatsapp.dm_policy,
            &cfg.whatsapp.allow_from,
            GroupPolicy::Off,
        ),
        "discord" => (
            cfg.discord.dm_policy,
            &cfg.discord.allow_from,
            cfg.discord.groups,
        ),
        "slack" => (cfg.slack.dm_policy, &cfg.slack.allow_from, cfg.slack.groups),
        _ => (DmPolicy::Pairing, &Vec::new(), GroupPolicy::Mention),
    };
    Rules {
        access: Access {
            policy,
            allow_from: allow_from.clone(),
        },
        groups,
    }
}

/// The session a message belongs to. Under `main` scope only the owner (a sender listed in
/// the channel's `allow_from`) continues the shared `main` session; anyone else approved
/// gets a session of their own, so they never see or reset the owner's conversation.
pub fn session_for(scope: SessionScope, owner: bool, msg: &Inbound) -> String {
    if msg.is_group {
        return format!("{}:group:{}", msg.channel, msg.chat_id);
    }
    match scope {
        SessionScope::Main if owner => "main".to_string(),
        SessionScope::Main | SessionScope::PerPeer => format!("{}:{}", msg.channel, msg.sender_id),
    }
}

/// The running channel layer. Cheap to clone.
#[derive(Clone)]
pub struct ChannelHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    engine: Engine,
    store: Store,
    cfg: ChannelsConfig,
    sink: Arc<HubSink>,
    channels: HashMap<&'static str, Arc<dyn Channel>>,
    rules: HashMap<&'static str, Rules>,
    /// Inbox rows handed to a worker and not finished yet: the dispatcher skips them when
    /// it reads the pending rows again.
    inflight: Mutex<HashSet<i64>>,
    /// Who this process is when it claims inbox rows (the replica id): replicas sharing a
    /// store never run the same message, and after a restart under the same name this
    /// process takes back at once what it held.
    owner: String,
    /// Per-session queues of rows; a worker exists while its queue has work. Unbounded in
    /// type, bounded in fact by the pending rows in the store (each row is queued once).
    workers: Mutex<HashMap<String, mpsc::UnboundedSender<InboxRow>>>,
    outbox_wake: Notify,
    /// Channel turns running at once across all sessions (`channels.max_concurrent_turns`).
    turn_permits: Arc<tokio::sync::Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Slash commands answered before a turn (`/approve ID`), once installed.
    commands: std::sync::OnceLock<Arc<dyn moltbot_core::ChatCommands>>,
}

impl ChannelHub {
    /// Start receiving on `channels` and answering. Everything stops when `shutdown` fires;
    /// a turn cut short stays pending in the inbox and runs again after the next start.
    pub fn start(
        engine: Engine,
        cfg: ChannelsConfig,
        sink: Arc<HubSink>,
        channels: Vec<Arc<dyn Channel>>,
        shutdown: CancellationToken,
    ) -> ChannelHub {
        let owner = moltbot_core::config::BusConfig::default().resolved_replica_id();
        Self::start_supervised(
            engine,
            cfg,
            sink,
            channels,
            shutdown,
            Supervisor::new(),
            owner,
        )
    }

    /// [`ChannelHub::start`] with the hub's loops run by `supervisor`: each channel's
    /// receive loop (`channel.<kind>`), the inbox dispatcher (`channels.dispatch`) and the
    /// outbox sender (`channels.outbox`) restart with backoff if they fail or panic.
    /// `owner` names this process among replicas sharing the store (`bus.replica_id`).
    pub fn start_supervised(
        engine: Engine,
        cfg: ChannelsConfig,
        sink: Arc<HubSink>,
        channels: Vec<Arc<dyn Channel>>,
        shutdown: CancellationToken,
        supervisor: Supervisor,
        owner: String,
    ) -> ChannelHub {
        let rules = channels
            .iter()
            .map(|c| (c.kind(), rules_for(&cfg, c.kind())))
            .collect();
        let turn_permits = Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent_turns));
        let hub = ChannelHub {
            inner: Arc::new(HubInner {
                store: engine.store().clone(),
                engine,
                cfg,
                sink,
                channels: channels.iter().map(|c| (c.kind(), c.clone())).collect(),
                rules,
                inflight: Mutex::new(HashSet::new()),
                owner,
                workers: Mutex::new(HashMap::new()),
                outbox_wake: Notify::new(),
                turn_permits,
                shutdown: shutdown.clone(),
                tasks: TaskTracker::new(),
                commands: std::sync::OnceLock::new(),
            }),
        };
        for ch in channels {
            let sink: Arc<dyn InboundSink> = hub.inner.sink.clone();
            let stop = shutdown.clone();
            let name = format!("channel.{}", ch.kind());
            let receive = move || {
                let (ch, sink, stop) = (ch.clone(), sink.clone(), stop.clone());
                async move {
                    ch.run(sink, stop).await.map_err(|e| {
                        if e.is_retryable() {
                            Failure::retry(e)
                        } else {
                            Failure::fatal(e)
                        }
                    })
                }
            };
            hub.inner.tasks.spawn(supervisor.clone().supervise_owned(
                name,
                shutdown.clone(),
                receive,
            ));
        }
        let h = hub.clone();
        let dispatch = move || {
            let h = h.clone();
            async move {
                h.dispatch_loop().await;
                Ok(())
            }
        };
        hub.inner.tasks.spawn(supervisor.clone().supervise_owned(
            "channels.dispatch".into(),
            shutdown.clone(),
            dispatch,
        ));
        let h = hub.clone();
        let outbox = move || {
            let h = h.clone();
            async move {
                h.outbox_loop().await;
                Ok(())
            }
        };
        hub.inner.tasks.spawn(supervisor.supervise_owned(
            "channels.outbox".into(),
            shutdown,
            outbox,
        ));
        hub
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Wait until every task of the hub has ended (after `shutdown` fired).
    pub async fn wait(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    pub fn channel(&self, kind: &str) -> Option<&Arc<dyn Channel>> {
        self.inner.channels.get(kind)
    }

    pub async fn status(&self) -> Vec<ChannelStatus> {
        let counts = self.inner.store.outbox_counts().await.unwrap_or_else(|e| {
            tracing::warn!(cause = %e, "cannot count the outbox");
            Vec::new()
        });
        let mut out: Vec<ChannelStatus> = self
            .inner
            .channels
            .values()
            .map(|c| {
                let (pending, failed) = counts
                    .iter()
                    .find(|(k, _, _)| k == c.kind())
                    .map_or((0, 0), |(_, p, f)| (*p, *f));
                ChannelStatus {
                    channel: c.kind(),
                    state: c.state(),
                    dm_policy: self.inner.rules[c.kind()].access.policy,
                    outbox_pending: pending,
                    outbox_failed: failed,
                }
            })
            .collect();
        out.sort_by_key(|s| s.channel);
        out
    }

    /// Queue a message to `chat_id` on `channel` (split if long); returns the outbox ids.
    pub async fn send_text(
        &self,
        channel: &str,
        chat_id: &str,
        text: &str,
    ) -> Result<Vec<i64>, ChannelError> {
        let ch =
            self.inner.channels.get(channel).ok_or_else(|| {
                ChannelError::Rejected(format!("channel `{channel}` is not enabled"))
            })?;
        let max = ch.capabilities().max_message_chars;
        let items = split_message(text, max)
            .into_iter()
            .map(|piece| NewOutbox {
                channel: channel.to_string(),
                chat_id: chat_id.to_string(),
                text: piece,
                reply_to: None,
                thread: None,
                dedupe_key: None,
            })
            .collect();
        let ids = self
            .inner
            .store
            .outbox_enqueue(items)
            .await
            .map_err(internal)?;
        self.inner.outbox_wake.notify_one();
        Ok(ids)
    }

    /// Install the slash-command handler (once; later calls are ignored).
    pub fn set_commands(&self, commands: Arc<dyn moltbot_core::ChatCommands>) {
        let _ = self.inner.commands.set(commands);
    }

    /// Whether `sender_id` is an owner of `channel` (in its `allow_from`).
    pub fn is_owner(&self, channel: &str, sender_id: &str) -> bool {
        self.inner
            .rules
            .get(channel)
            .is_some_and(|r| r.access.allow_from.iter().any(|a| a == sender_id))
    }

    /// The owners of `channel` (its `allow_from`).
    pub fn owners(&self, channel: &str) -> Vec<String> {
        self.inner
            .rules
            .get(channel)
            .map(|r| r.access.allow_from.clone())
            .unwrap_or_default()
    }

    /// Wake the outbox loop (after rows were queued directly in the store).
    pub fn wake_outbox(&self) {
        self.inner.outbox_wake.notify_one();
    }

    /// Claim pending inbox rows and hand each to its session's worker. Claiming again
    /// every round renews this process's claims on rows still running.
    async fn dispatch_loop(&self) {
        loop {
            let claim = self.inner.store.inbox_claim(
                &self.inner.owner,
                now_ms(),
                CLAIM_LEASE.as_millis() as i64,
                PENDING_BATCH,
            );
            match claim.await {
                Ok(rows) => {
                    for row in rows {
                        self.dispatch(row);
                    }
                }
                Err(e) => tracing::error!(cause = %e, "cannot read the channel inbox"),
            }
            tokio::select! {
                () = self.inner.sink.wake.notified() => {}
                () = tokio::time::sleep(POLL_EVERY) => {}
                () = self.inner.shutdown.cancelled() => return,
            }
        }
    }

    fn dispatch(&self, row: InboxRow) {
        {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !inflight.insert(row.id) {
                return;
            }
        }
        let owner = self
            .inner
            .rules
            .get(row.message.channel.as_str())
            .is_some_and(|r| r.access.allow_from.contains(&row.message.sender_id));
        let session = session_for(self.inner.cfg.session_scope, owner, &row.message);
        if self
            .inner
            .commands
            .get()
            .is_some_and(|c| c.claims(row.message.text.trim()))
        {
            let hub = self.clone();
            self.inner.tasks.spawn(async move {
                hub.process(&session, row.clone()).await;
                hub.inner
                    .inflight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&row.id);
            });
            return;
        }
        // The lock is held only to find or start the worker (never across an await).
        let mut workers = self
            .inner
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = workers.get(&session) {
            match tx.send(row) {
                Ok(()) => return,
                // The worker is exiting; start a new one below with the row.
                Err(mpsc::error::SendError(r)) => {
                    return self.start_worker(&mut workers, session, r)
                }
            }
        }
        self.start_worker(&mut workers, session, row);
    }

    fn start_worker(
        &self,
        workers: &mut HashMap<String, mpsc::UnboundedSender<InboxRow>>,
        session: String,
        first: InboxRow,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Cannot fail: `rx` is alive.
        let _ = tx.send(first);
        workers.insert(session.clone(), tx);
        let hub = self.clone();
        self.inner.tasks.spawn(async move {
            loop {
                let row = match rx.try_recv() {
                    Ok(row) => row,
                    Err(_) => {
                        // Nothing queued: retire, unless a row arrived meanwhile.
                        let mut workers = hub
                            .inner
                            .workers
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        match rx.try_recv() {
                            Ok(row) => row,
                            Err(_) => {
                                workers.remove(&session);
                                return;
                            }
                        }
                    }
                };
                let id = row.id;
                let failed_row = row.clone();
                // A bug in one message must not strand the session: the row is marked failed
                // (so it does not panic again after a restart) and the worker goes on.
                let run = std::panic::AssertUnwindSafe(hub.process(&session, row));
                if run.catch_unwind().await.is_err() {
                    tracing::error!(inbox_id = id, "handling a channel message panicked");
                    hub.finish(&failed_row, "failed", Vec::new()).await;
                }
                hub.inner
                    .inflight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                if hub.inner.shutdown.is_cancelled() {
                    return;
                }
            }
        });
    }

    /// Handle one received message to the end: ignored, answered with a pairing code, or
    /// answered by the model. Leaves the row pending only when shutdown interrupted it.
    async fn process(&self, session: &str, row: InboxRow) {
        // The dispatcher may have read this row just before a worker closed it: only a row
        // still pending in the store is handled, so nothing is answered twice.
        match self.inner.store.inbox_status(row.id).await {
            Ok(Some(status)) if status == "pending" => {}
            Ok(_) => return,
            Err(e) => {
                tracing::error!(cause = %e, "cannot read an inbox row");
                return;
            }
        }
        let msg = &row.message;
        let kind = metric_channel(&msg.channel);
        let Some(ch) = self.inner.channels.get(msg.channel.as_str()).cloned() else {
            tracing::warn!(channel = %msg.channel, "message for a channel that is not enabled");
            return self.finish(&row, "ignored", Vec::new()).await;
        };
        let rules = &self.inner.rules[ch.kind()];
        if msg.is_group {
            let answer = match rules.groups {
                GroupPolicy::Off => false,
                GroupPolicy::All => true,
                GroupPolicy::Mention => msg.mentioned,
            };
            if !answer {
                return self.finish(&row, "ignored", Vec::new()).await;
            }
        }
        let gate = match rules
            .access
            .check(&self.inner.store, &self.inner.cfg.pairing, msg, now_ms())
            .await
        {
            Ok(g) => g,
            Err(e) => {
                // The store failed: leave the row pending; the next pass retries it.
                tracing::error!(cause = %e, "access check failed");
                return;
            }
        };
        match gate {
            Gate::Allowed => {}
            Gate::SendCode { code, .. } => {
                tracing::info!(channel = kind, "pairing code sent to an unknown sender");
                metrics::counter!("moltbot_channel_pairing_codes_total", "channel" => kind)
                    .increment(1);
                let text = pairing::code_message(
                    &msg.channel,
                    &code,
                    self.inner.cfg.pairing.code_ttl_secs,
                );
                let replies = self.replies(&row, ch.as_ref(), &text);
                return self.finish(&row, "pairing", replies).await;
            }
            Gate::Ignored(why) => {
                tracing::debug!(channel = kind, reason = why, "message ignored");
                return self.finish(&row, "ignored", Vec::new()).await;
            }
        }
        let text = msg.text.trim();
        if text.is_empty() {
            return self.finish(&row, "ignored", Vec::new()).await;
        }
        if text.starts_with('/') {
            let owner = self.is_owner(ch.kind(), &msg.sender_id);
            if let Some(reply) = self
                .inner
                .commands
                .get()
                .and_then(|c| c.handle(ch.kind(), &msg.sender_id, owner, text))
            {
                let replies = self.replies(&row, ch.as_ref(), &reply);
                return self.finish(&row, "done", replies).await;
            }
        }
        if matches!(text, "/new" | "/reset") {
            let reply = match self.inner.engine.reset_session(session).await {
                Ok(_) => "Started a new conversation.".to_string(),
                Err(e) => format!("Could not reset the conversation ({}).", e.kind()),
            };
            let replies = self.replies(&row, ch.as_ref(), &reply);
            return self.finish(&row, "done", replies).await;
        }
        let text = text.to_string();
        // Channel turns wait for a permit rather than being refused: the inbox holds them.
        let _permit = tokio::select! {
            p = self.inner.turn_permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = self.inner.shutdown.cancelled() => return,
        };
        let typing = self.typing_loop(ch.clone(), msg.chat_id.clone());
        let turn = self.inner.engine.turn(
            TurnRequest {
                // The received message's own id: a turn run again after a crash (or by
                // another replica after a lease ran out) stores its question and answer
                // once, and a reply already stored is reused instead of asked again.
                turn_id: Some(format!("inbox:{}:{}", msg.channel, msg.external_id)),
                session_id: session.to_string(),
                run_id: None,
                user: Some(format!("{}:{}", msg.channel, msg.sender_id)),
                message: text,
                channel: ch.kind(),
                origin: Some(moltbot_core::Origin {
                    channel: ch.kind().to_string(),
                    chat_id: msg.chat_id.clone(),
                }),
                overrides: Overrides::default(),
            },
            None,
            self.inner.shutdown.child_token(),
        );
        let outcome = turn.await;
        typing.cancel();
        let reply = match outcome {
            Ok(out) => out.reply,
            Err(_) if self.inner.shutdown.is_cancelled() => {
                // Interrupted by shutdown: stays pending, answered after the restart.
                return;
            }
            Err(e) => {
                tracing::warn!(channel = kind, cause = %e, "channel turn failed");
                metrics::counter!("moltbot_channel_turn_failures_total", "channel" => kind)
                    .increment(1);
                failure_text(&e)
            }
        };
        let reply = if reply.trim().is_empty() {
            "(no answer)".to_string()
        } else {
            reply
        };
        let replies = self.replies(&row, ch.as_ref(), &reply);
        self.finish(&row, "done", replies).await;
    }

    /// Split `text` into outbox rows answering `row`; keys make a re-run queue nothing twice.
    fn replies(&self, row: &InboxRow, ch: &dyn Channel, text: &str) -> Vec<NewOutbox> {
        let msg = &row.message;
        split_message(text, ch.capabilities().max_message_chars)
            .into_iter()
            .enumerate()
            .map(|(i, piece)| NewOutbox {
                channel: msg.channel.clone(),
                chat_id: msg.chat_id.clone(),
                text: piece,
                // Only the first piece quotes the user's message.
                reply_to: if i == 0 { msg.reply_to.clone() } else { None },
                thread: msg.thread.clone(),
                dedupe_key: Some(format!("in:{}:{i}", row.id)),
            })
            .collect()
    }

    async fn finish(&self, row: &InboxRow, status: &'static str, replies: Vec<NewOutbox>) {
        let queued = !replies.is_empty();
        if let Err(e) = self.inner.store.inbox_finish(row.id, status, replies).await {
            // Stays pending: the next pass runs it again (the outbox keys prevent doubles).
            tracing::error!(cause = %e, "cannot close an inbox row");
            return;
        }
        if queued {
            self.inner.outbox_wake.notify_one();
        }
    }

    /// Show "typing…" until the returned token is cancelled.
    fn typing_loop(&self, ch: Arc<dyn Channel>, chat_id: String) -> CancellationToken {
        let stop = self.inner.shutdown.child_token();
        if !ch.capabilities().typing {
            return stop;
        }
        let done = stop.clone();
        self.inner.tasks.spawn(async move {
            loop {
                if let Err(e) = ch.typing(&chat_id).await {
                    tracing::debug!(channel = ch.kind(), cause = %e, "typing indicator failed");
                }
                tokio::select! {
                    () = tokio::time::sleep(TYPING_EVERY) => {}
                    () = done.cancelled() => return,
                }
            }
        });
        stop
    }

    /// Deliver due outbox rows until shutdown, sleeping until the next one is due.
    async fn outbox_loop(&self) {
        let mut next_prune = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_prune {
                next_prune += PRUNE_EVERY;
                let keep_ms = i64::from(self.inner.cfg.retention_days) * 86_400_000;
                match self.inner.store.channels_prune(now_ms() - keep_ms).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "old channel messages pruned"),
                    Err(e) => tracing::warn!(cause = %e, "cannot prune old channel messages"),
                }
            }
            let now = now_ms();
            // Claimed: another replica sharing the store does not send the same rows.
            let claim = self
                .inner
                .store
                .outbox_claim(now, CLAIM_LEASE.as_millis() as i64, 64);
            match claim.await {
                Ok(due) if !due.is_empty() => {
                    let recorded = std::sync::atomic::AtomicBool::new(true);
                    futures::stream::iter(due)
                        .for_each_concurrent(SEND_CONCURRENCY, |row| async {
                            // Once shutdown begins no new send starts (those started finish
                            // and are recorded).
                            if !self.inner.shutdown.is_cancelled() && !self.deliver(row).await {
                                recorded.store(false, std::sync::atomic::Ordering::Relaxed);
                            }
                        })
                        .await;
                    if self.inner.shutdown.is_cancelled() {
                        return;
                    }
                    if recorded.load(std::sync::atomic::Ordering::Relaxed) {
                        // More may be due right away (the next piece of a split reply).
                        continue;
                    }
                    // The store did not take a result: pause instead of resending at once.
                }
                Ok(_) => {}
                Err(e) => tracing::error!(cause = %e, "cannot read the outbox"),
            }
            let wait = match self.inner.store.outbox_next_due().await {
                Ok(Some(at)) => Duration::from_millis((at - now_ms()).clamp(0, 60_000) as u64),
                _ => POLL_EVERY,
            }
            .min(POLL_EVERY);
            tokio::select! {
                () = self.inner.outbox_wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = self.inner.shutdown.cancelled() => return,
            }
        }
    }

    /// Send one outbox row and record the result; `false` if the result could not be
    /// recorded (the store failed).
    async fn deliver(&self, row: OutboxRow) -> bool {
        let store = &self.inner.store;
        let kind = metric_channel(&row.channel);
        let Some(ch) = self.inner.channels.get(row.channel.as_str()) else {
            // Queued for a channel that is not enabled now: check again later.
            let later = now_ms() + 60_000;
            return store
                .outbox_attempt_failed(row.id, Some(later), "channel not enabled")
                .await
                .is_ok();
        };
        let out = moltbot_core::Outbound {
            chat_id: row.chat_id.clone(),
            text: row.text.clone(),
            reply_to: row.reply_to.clone(),
            thread: row.thread.clone(),
        };
        // Not cut short by shutdown: a send the platform may already have taken must be
        // recorded, or the restart would send it again. Adapters bound each call in time.
        let result = ch.send(&out).await;
        let saved = match result {
            Ok(platform_id) => {
                metrics::counter!("moltbot_channel_messages_sent_total", "channel" => kind)
                    .increment(1);
                store.outbox_sent(row.id, &platform_id).await
            }
            Err(e) => {
                metrics::counter!("moltbot_channel_send_failures_total",
                    "channel" => kind, "kind" => e.kind())
                .increment(1);
                let attempts = row.attempts as u32 + 1;
                let next = retry_at(&e, attempts, &self.inner.cfg);
                match next {
                    Some(_) => {
                        tracing::warn!(channel = kind, attempts, cause = %e, "send failed; will retry")
                    }
                    None => {
                        tracing::error!(channel = kind, attempts, cause = %e, "send failed; giving up")
                    }
                }
                store
                    .outbox_attempt_failed(row.id, next, &e.to_string())
                    .await
            }
        };
        match saved {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(cause = %e, "cannot record an outbox attempt");
                false
            }
        }
    }
}

/// When to try again after `attempts` failed sends, or `None` to give up.
fn retry_at(e: &ChannelError, attempts: u32, cfg: &ChannelsConfig) -> Option<i64> {
    if !e.is_retryable() || attempts >= cfg.outbox.max_attempts {
        return None;
    }
    let backoff = match e {
        ChannelError::RateLimited { retry_after } => *retry_after,
        _ => Duration::from_secs(1u64 << attempts.saturating_sub(1).min(16)),
    }
    .min(Duration::from_secs(cfg.outbox.max_backoff_secs));
    Some(now_ms() + backoff.as_millis() as i64)
}

/// What the user sees when their turn failed (no internals).
fn failure_text(e: &EngineError) -> String {
    match e {
        EngineError::InvalidInput(why) => format!("I can't take that message: {why}"),
        EngineError::NotReady(_) => {
            "The assistant is still starting up. Please try again in a minute.".into()
        }
        EngineError::Model(_)
        | EngineError::Store(_)
        | EngineError::Bus(_)
        | EngineError::Remote(_) => {
            "Sorry, something went wrong while answering. Please try again.".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(group: bool) -> Inbound {
        Inbound {
            channel: "telegram".into(),
            external_id: "1".into(),
            chat_id: "-100".into(),
            sender_id: "42".into(),
            sender_name: None,
            text: "hi".into(),
            is_group: group,
            mentioned: false,
            reply_to: None,
            thread: None,
        }
    }

    #[test]
    fn sessions_by_scope() {
        assert_eq!(
            session_for(SessionScope::PerPeer, true, &msg(false)),
            "telegram:42"
        );
        assert_eq!(session_for(SessionScope::Main, true, &msg(false)), "main");
        assert_eq!(
            session_for(SessionScope::Main, false, &msg(false)),
            "telegram:42",
            "only the owner shares the main session"
        );
        assert_eq!(
            session_for(SessionScope::Main, true, &msg(true)),
            "telegram:group:-100"
        );
    }

    #[test]
    fn retry_schedule() {
        let cfg = ChannelsConfig::default();
        let now = now_ms();
        let t = retry_at(&ChannelError::Transient("x".into()), 3, &cfg).unwrap();
        assert!(
            (now + 3_900..now + 6_000).contains(&t),
            "4 s after the third failure"
        );
        let t = retry_at(
            &ChannelError::RateLimited {
                retry_after: Duration::from_secs(7),
            },
            1,
            &cfg,
        )
        .unwrap();
        assert!((now + 6_900..now + 9_000).contains(&t));
        assert!(retry_at(&ChannelError::Rejected("x".into()), 1, &cfg).is_none());
        assert!(retry_at(&ChannelError::Transient("x".into()), 12, &cfg).is_none());
        // Backoff is capped.
        let t = retry_at(&ChannelError::Transient("x".into()), 11, &cfg).unwrap();
        assert!(t <= now_ms() + 300_000);
    }
}
