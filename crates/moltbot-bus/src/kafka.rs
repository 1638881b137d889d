//! [`KafkaBus`]: turns through Kafka, replies back to the replica that took them.

use crate::offsets::Offsets;
use crate::queues::SessionQueues;
use crate::wire::{ReplyBody, ReplyRecord, TurnRecord};
use futures::future::BoxFuture;
use futures::FutureExt;
use moltbot_core::config::BusConfig;
use moltbot_core::{Failure, ModelError, Supervisor};
use moltbot_engine::{
    BusHealth, Engine, EngineError, MessageBus, TurnEvent, TurnOutcome, TurnRequest, WireError,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("kafka ({brokers}): {cause}")]
    Kafka { brokers: String, cause: String },
}

/// How long a produce may wait for the broker before the caller gets an error (a broker
/// restart shorter than this loses nothing: queued records go out when it is back).
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// A turn of which nothing was heard for this long (no `started`, no progress, no reply) is
/// published again. Turns stream progress while they run, so only a lost turn or a lost
/// reply stays silent this long (or a tool that works silently: its second run then waits
/// behind the first in its session's queue and replays the stored reply).
const SILENCE: Duration = Duration::from_secs(20);

/// A caller waiting for its turn's reply on this replica.
struct Pending {
    events: Option<mpsc::UnboundedSender<TurnEvent>>,
    done: Option<oneshot::Sender<Result<TurnOutcome, EngineError>>>,
    /// The run being followed (the newest `started` heard).
    run: Option<String>,
    /// Woken by every record of the turn (its caller republishes after a long silence).
    heard: Arc<tokio::sync::Notify>,
}

/// Every lock here guards plain data that a panicking holder cannot leave half-written
/// in a way that matters (maps, counters), so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Shared {
    cfg: BusConfig,
    replica: String,
    turns_topic: String,
    reply_topic: String,
    engine: Engine,
    producer: FutureProducer,
    pending: Mutex<HashMap<String, Pending>>,
    /// Turns running on this replica, by turn id, to cancel on request.
    running: Mutex<HashMap<String, CancellationToken>>,
    offsets: Mutex<Offsets>,
    assigned: Mutex<BTreeSet<i32>>,
    rebalances: AtomicU64,
    /// Turns this replica published, and turns it ran (for a caller anywhere).
    submitted: AtomicU64,
    ran: AtomicU64,
    broker_up: AtomicBool,
    /// Bumped when one of our topics is found gone (a broker that restarted without its
    /// data): callers then publish their waiting turns again.
    epoch: tokio::sync::watch::Sender<u64>,
    /// The turn consumer, to store offsets with; taken when stopping so it can close.
    turns_consumer: Mutex<Option<Arc<StreamConsumer<TurnsContext>>>>,
}

impl Shared {
    fn note_error(&self, what: &str, e: impl std::fmt::Display) {
        tracing::warn!(replica = %self.replica, "bus: {what}: {e}");
    }

    /// A reply record as JSON.
    fn encode(&self, turn_id: &str, run: &str, body: ReplyBody) -> Option<Vec<u8>> {
        let record = ReplyRecord {
            turn_id: turn_id.to_string(),
            run: run.to_string(),
            body,
        };
        serde_json::to_vec(&record)
            .map_err(|e| self.note_error("cannot encode a reply", e))
            .ok()
    }

    /// Queue an encoded reply without waiting for the broker (records of one topic keep
    /// their order); returns the delivery to await when it matters.
    fn queue(
        &self,
        topic: &str,
        turn_id: &str,
        payload: &[u8],
    ) -> Option<rdkafka::producer::DeliveryFuture> {
        self.producer
            .send_result(FutureRecord::to(topic).key(turn_id).payload(payload))
            .map_err(|(e, _)| self.note_error("cannot queue a reply", e))
            .ok()
    }

    /// Queue a reply record (a progress record: nobody waits for its delivery).
    fn send_reply(&self, topic: &str, turn_id: &str, run: &str, body: ReplyBody) {
        if let Some(payload) = self.encode(turn_id, run, body) {
            self.queue(topic, turn_id, &payload);
        }
    }

    /// Send a turn's final record and wait until the broker has it, retrying while the
    /// broker is away; gives up only when the replica stops (the turn is then redelivered).
    async fn send_final(
        &self,
        topic: &str,
        turn_id: &str,
        run: &str,
        body: ReplyBody,
        stop: &CancellationToken,
    ) -> bool {
        // Encoded once: the outcome can be large (tool screenshots).
        let Some(payload) = self.encode(turn_id, run, body) else {
            return false;
        };
        let mut pause = Duration::from_millis(200);
        loop {
            if let Some(delivery) = self.queue(topic, turn_id, &payload) {
                match delivery.await {
                    Ok(Ok(_)) => return true,
                    Ok(Err((e, _))) => self.note_error("a final reply was not delivered", e),
                    Err(_) => self.note_error("a final reply was dropped", "producer closed"),
                }
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => return false,
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// A record from this replica's reply topic: hand it to the waiting caller.
    fn deliver(&self, rec: ReplyRecord) {
        let mut pending = lock(&self.pending);
        let Some(entry) = pending.get_mut(&rec.turn_id) else {
            // Not ours any more (answered, timed out, or the caller left).
            return;
        };
        entry.heard.notify_one();
        match rec.body {
            ReplyBody::Started { replica } => {
                if entry.run.as_deref() != Some(rec.run.as_str()) {
                    if entry.run.is_some() {
                        // The turn was delivered again (its replica died or lost the
                        // partition): follow the new run.
                        metrics::counter!("moltbot_bus_redelivered_total").increment(1);
                        tracing::info!(turn_id = %rec.turn_id, %replica, "turn redelivered; following the new run");
                    }
                    entry.run = Some(rec.run);
                }
            }
            ReplyBody::Event { event } => {
                if entry.run.as_deref() == Some(rec.run.as_str()) {
                    if let Some(tx) = &entry.events {
                        let _ = tx.send(event);
                    }
                }
            }
            ReplyBody::Done { outcome } => {
                // Any run's outcome is the turn's answer (they agree on what is stored).
                if let Some(mut entry) = pending.remove(&rec.turn_id) {
                    if let Some(done) = entry.done.take() {
                        let _ = done.send(Ok(*outcome));
                    }
                }
            }
            ReplyBody::Failed { error } => {
                if entry.run.is_none() || entry.run.as_deref() == Some(rec.run.as_str()) {
                    if let Some(mut entry) = pending.remove(&rec.turn_id) {
                        if let Some(done) = entry.done.take() {
                            let _ = done.send(Err(error.into()));
                        }
                    }
                }
            }
        }
    }

    /// A turn's offset finished: store the partition's commit position if it moved.
    fn finish_offset(&self, partition: i32, offset: i64) {
        let position = lock(&self.offsets).finish(partition, offset);
        let Some(position) = position else { return };
        let consumer = lock(&self.turns_consumer).clone();
        if let Some(consumer) = consumer {
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(&self.turns_topic, partition, Offset::Offset(position))
                .is_ok()
            {
                // Fails when the partition was revoked meanwhile: its new owner re-reads
                // from the last commit, and turn ids make that safe.
                if let Err(e) = consumer.store_offsets(&tpl) {
                    tracing::debug!(partition, position, cause = %e, "offset not stored");
                }
            }
        }
    }
}

/// The turns consumer's hooks: partition moves.
struct TurnsContext {
    shared: std::sync::Weak<Shared>,
}

impl ClientContext for TurnsContext {}

impl ConsumerContext for TurnsContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let partitions = |tpl: &TopicPartitionList| -> Vec<i32> {
            tpl.elements().iter().map(|e| e.partition()).collect()
        };
        match rebalance {
            Rebalance::Assign(tpl) => {
                let got = partitions(tpl);
                {
                    let mut offsets = lock(&shared.offsets);
                    for p in &got {
                        offsets.assign(*p);
                    }
                }
                lock(&shared.assigned).extend(got.iter().copied());
                // Sessions of these partitions may have run elsewhere since we cached them.
                shared.engine.forget_cached_sessions();
                shared.rebalances.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("moltbot_bus_rebalances_total").increment(1);
                tracing::info!(replica = %shared.replica, partitions = ?got, "bus partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                let lost = partitions(tpl);
                {
                    let mut offsets = lock(&shared.offsets);
                    for p in &lost {
                        offsets.revoke(*p);
                    }
                }
                let mut assigned = lock(&shared.assigned);
                for p in &lost {
                    assigned.remove(p);
                }
                tracing::info!(replica = %shared.replica, partitions = ?lost, "bus partitions revoked");
            }
            Rebalance::Error(e) => shared.note_error("rebalance failed", e),
        }
    }
}

/// A turn read from the topic, waiting in its session's queue.
struct Job {
    turn: TurnRequest,
    reply_to: String,
    partition: i32,
    offset: i64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The Kafka message bus of one replica.
#[derive(Clone)]
pub struct KafkaBus {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("replica", &self.shared.replica)
            .field("turns_topic", &self.shared.turns_topic)
            .finish_non_exhaustive()
    }
}

fn client_config(cfg: &BusConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        // Our own logs say what matters; librdkafka's reconnect chatter stays at debug.
        .set("log_level", "3")
        // Topics are created by us, with our partition count. A broker that restarted
        // without its data would otherwise create them on the first metadata request with
        // its default layout; a turns topic shrinking under a running client crashes
        // librdkafka 2.12 (seen against tansu).
        .set("allow.auto.create.topics", "false");
    c
}

impl KafkaBus {
    /// Create the topics if needed, connect, and start consuming: turns of the partitions
    /// this replica is given (run with `engine`), replies for this replica's callers. The
    /// loops run under `supervisor` until `stop`.
    pub async fn start(
        cfg: &BusConfig,
        engine: Engine,
        supervisor: &Supervisor,
        stop: CancellationToken,
    ) -> Result<KafkaBus, BusError> {
        let err = |cause: String| BusError::Kafka {
            brokers: cfg.brokers.clone(),
            cause,
        };
        let replica = cfg.resolved_replica_id();
        let turns_topic = format!("{}.turns", cfg.topic_prefix);
        let reply_topic = format!("{}.replies.{replica}", cfg.topic_prefix);

        create_topics(cfg, &turns_topic, &reply_topic)
            .await
            .map_err(err)?;

        let producer: FutureProducer = client_config(cfg)
            // Retries never duplicate or reorder records.
            .set("enable.idempotence", "true")
            // The Java client's partitioner, so other Kafka tools place session keys on the
            // same partitions we do.
            .set("partitioner", "murmur2_random")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set(
                "message.timeout.ms",
                PRODUCE_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .map_err(|e| err(format!("cannot create the producer: {e}")))?;

        // Replies: read this replica's topic from its current end (older replies belong to
        // callers of a previous life of this replica, who are gone).
        let replies: StreamConsumer = client_config(cfg)
            .set("group.id", format!("{}-replies-{replica}", cfg.group_id))
            .set("enable.auto.commit", "false")
            // Only reached when the topic's log started over (a broker that lost its data):
            // everything in the new log is new.
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", cfg.fetch_wait_ms.to_string())
            .create()
            .map_err(|e| err(format!("cannot create the reply consumer: {e}")))?;
        let topic = reply_topic.clone();
        let (_, high) = tokio::task::spawn_blocking({
            let replies_probe: BaseConsumer = client_config(cfg)
                .create()
                .map_err(|e| err(format!("cannot create a probe client: {e}")))?;
            move || replies_probe.fetch_watermarks(&topic, 0, Duration::from_secs(10))
        })
        .await
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(format!("cannot read the reply topic's end: {e}")))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&reply_topic, 0, Offset::Offset(high))
            .map_err(|e| err(e.to_string()))?;
        replies
            .assign(&tpl)
            .map_err(|e| err(format!("cannot assign the reply topic: {e}")))?;

        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            replica: replica.clone(),
            turns_topic: turns_topic.clone(),
            reply_topic,
            engine,
            producer,
            pending: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            offsets: Mutex::new(Offsets::default()),
            assigned: Mutex::new(BTreeSet::new()),
            rebalances: AtomicU64::new(0),
            submitted: AtomicU64::new(0),
            ran: AtomicU64::new(0),
            broker_up: AtomicBool::new(true),
            epoch: tokio::sync::watch::Sender::new(0),
            turns_consumer: Mutex::new(None),
        });

        // Turns: the group shares the partitions. Offsets are stored by us once a turn is
        // answered (and every earlier one of its partition), and committed by librdkafka
        // every second and when partitions move.
        let turns: StreamConsumer<TurnsContext> = client_config(cfg)
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (cfg.session_timeout_ms / 5).max(100).to_string(),
            )
            .set("fetch.wait.max.ms", cfg.fetch_wait_ms.to_string())
            .create_with_context(TurnsContext {
                shared: Arc::downgrade(&shared),
            })
            .map_err(|e| err(format!("cannot create the turn consumer: {e}")))?;
        turns
            .subscribe(&[&turns_topic])
            .map_err(|e| err(format!("cannot subscribe to {turns_topic}: {e}")))?;
        let turns = Arc::new(turns);
        *lock(&shared.turns_consumer) = Some(turns.clone());

        let replies = Arc::new(replies);
        {
            let (shared, stop2) = (shared.clone(), stop.clone());
            supervisor.spawn("bus.replies", stop.clone(), move || {
                reply_loop(shared.clone(), replies.clone(), stop2.clone())
            });
        }
        {
            let (shared, stop2) = (shared.clone(), stop.clone());
            let permits = Arc::new(Semaphore::new(cfg.max_in_flight));
            let queues = SessionQueues::new();
            supervisor.spawn("bus.turns", stop.clone(), move || {
                turn_loop(
                    shared.clone(),
                    turns.clone(),
                    permits.clone(),
                    queues.clone(),
                    stop2.clone(),
                )
            });
        }
        {
            let (shared, stop2) = (shared.clone(), stop.clone());
            supervisor.spawn("bus.probe", stop.clone(), move || {
                probe_loop(shared.clone(), stop2.clone())
            });
        }
        tracing::info!(
            %replica,
            brokers = %cfg.brokers,
            topic = %turns_topic,
            "message bus: kafka"
        );
        Ok(KafkaBus { shared })
    }

    /// Partitions of the turns topic this replica owns now.
    pub fn assigned(&self) -> Vec<i32> {
        lock(&self.shared.assigned).iter().copied().collect()
    }

    /// Turns this replica published and turns it ran.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.submitted.load(Ordering::Relaxed),
            self.shared.ran.load(Ordering::Relaxed),
        )
    }
}

async fn reply_loop(
    shared: Arc<Shared>,
    replies: Arc<StreamConsumer>,
    stop: CancellationToken,
) -> Result<(), Failure> {
    loop {
        let msg = tokio::select! {
            m = replies.recv() => m,
            () = stop.cancelled() => return Ok(()),
        };
        match msg {
            Ok(m) => {
                let Some(payload) = m.payload() else { continue };
                match serde_json::from_slice::<ReplyRecord>(payload) {
                    Ok(rec) => {
                        tracing::debug!(offset = m.offset(), turn_id = %rec.turn_id, run = %rec.run, "bus: reply record read");
                        shared.deliver(rec);
                    }
                    Err(e) => shared.note_error("unreadable reply record", e),
                }
            }
            Err(e) => {
                shared.note_error("reading replies", &e);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn turn_loop(
    shared: Arc<Shared>,
    turns: Arc<StreamConsumer<TurnsContext>>,
    permits: Arc<Semaphore>,
    queues: Arc<SessionQueues<Job>>,
    stop: CancellationToken,
) -> Result<(), Failure> {
    loop {
        // At most `max_in_flight` turns read and not finished: past that, stop reading.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.map_err(Failure::retry)?,
            () = stop.cancelled() => return leave(&shared),
        };
        let msg = tokio::select! {
            m = turns.recv() => m,
            () = stop.cancelled() => return leave(&shared),
        };
        let m = match msg {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(_)) => continue,
            Err(e) => {
                shared.note_error("reading turns", &e);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let (partition, offset) = (m.partition(), m.offset());
        let record = m.payload().map(serde_json::from_slice::<TurnRecord>);
        drop(m);
        lock(&shared.offsets).start(partition, offset);
        match record {
            Some(Ok(TurnRecord::Turn { turn, reply_to })) => {
                tracing::debug!(partition, offset, turn_id = ?turn.turn_id, "bus: turn read");
                let session = turn.session_id.clone();
                let job = Job {
                    turn: *turn,
                    reply_to,
                    partition,
                    offset,
                    _permit: permit,
                };
                let (shared, stop) = (shared.clone(), stop.clone());
                queues.push(&session, job, move |job| {
                    run_job(shared.clone(), job, stop.clone())
                });
            }
            Some(Ok(TurnRecord::Cancel { turn_id })) => {
                let running = lock(&shared.running);
                if let Some(cancel) = running.get(&turn_id) {
                    cancel.cancel();
                }
                drop(running);
                shared.finish_offset(partition, offset);
            }
            Some(Err(e)) => {
                shared.note_error("unreadable turn record (skipped)", e);
                shared.finish_offset(partition, offset);
            }
            None => shared.finish_offset(partition, offset),
        }
    }
}

/// Stopping: let go of the turn consumer so that, once the supervisor drops its handle too,
/// it closes and leaves the group (committing what is finished) at once.
fn leave(shared: &Shared) -> Result<(), Failure> {
    lock(&shared.turns_consumer).take();
    Ok(())
}

/// Run one turn read from the topic and send what happens to its caller's replica.
async fn run_job(shared: Arc<Shared>, job: Job, stop: CancellationToken) {
    let turn_id = job.turn.turn_id.clone().unwrap_or_default();
    let run = format!("run-{}", uuid::Uuid::new_v4());
    let cancel = stop.child_token();
    lock(&shared.running).insert(turn_id.clone(), cancel.clone());
    let started = Instant::now();
    shared.ran.fetch_add(1, Ordering::Relaxed);
    shared.send_reply(
        &job.reply_to,
        &turn_id,
        &run,
        ReplyBody::Started {
            replica: shared.replica.clone(),
        },
    );
    let (tx, mut rx) = mpsc::channel::<TurnEvent>(256);
    let forward = {
        let (shared, reply_to, turn_id, run) = (
            shared.clone(),
            job.reply_to.clone(),
            turn_id.clone(),
            run.clone(),
        );
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Whatever else is already waiting goes with it: adjacent text pieces become
                // one record (fewer broker round trips, same text, same order).
                let mut batch = vec![first];
                while batch.len() < 256 {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                for event in coalesce(batch) {
                    shared.send_reply(&reply_to, &turn_id, &run, ReplyBody::Event { event });
                }
            }
        })
    };
    // A panic in the turn is this turn's failure, reported to its caller; it must not
    // leave the caller waiting or the partition's commit position stuck.
    let result = AssertUnwindSafe(shared.engine.turn_here(job.turn, Some(tx), cancel.clone()))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!(%turn_id, "the turn panicked");
            Err(EngineError::Remote("the turn failed unexpectedly".into()))
        });
    let _ = forward.await;
    lock(&shared.running).remove(&turn_id);
    if stop.is_cancelled() && matches!(result, Err(EngineError::Model(ModelError::Cancelled))) {
        // This replica is stopping: leave the turn uncommitted for the next owner.
        return;
    }
    let body = match result {
        Ok(outcome) => ReplyBody::Done {
            outcome: Box::new(outcome),
        },
        Err(e) => ReplyBody::Failed {
            error: WireError::from(&e),
        },
    };
    metrics::histogram!("moltbot_bus_turn_seconds").record(started.elapsed().as_secs_f64());
    let sent = shared
        .send_final(&job.reply_to, &turn_id, &run, body, &stop)
        .await;
    tracing::debug!(%turn_id, %run, sent, "bus: turn finished");
    if sent {
        shared.finish_offset(job.partition, job.offset);
    }
}

/// Join adjacent text deltas; other events keep their place.
fn coalesce(events: Vec<TurnEvent>) -> Vec<TurnEvent> {
    let mut out: Vec<TurnEvent> = Vec::with_capacity(events.len());
    for e in events {
        match (out.last_mut(), e) {
            (Some(TurnEvent::Delta(text)), TurnEvent::Delta(more)) => text.push_str(&more),
            (_, e) => out.push(e),
        }
    }
    out
}

/// Publish a turn record, keyed by its session.
async fn publish(shared: &Shared, session_id: &str, payload: &[u8]) -> Result<(), KafkaError> {
    let sent = shared
        .producer
        .send(
            FutureRecord::to(&shared.turns_topic)
                .key(session_id)
                .payload(payload),
            Duration::from_secs(5),
        )
        .await;
    match sent {
        Ok(delivery) => {
            tracing::debug!(
                session_id,
                partition = delivery.partition,
                offset = delivery.offset,
                "bus: turn record published"
            );
            Ok(())
        }
        Err((e, _)) => {
            metrics::counter!("moltbot_bus_publish_errors_total").increment(1);
            Err(e)
        }
    }
}

/// Create the turns topic and this replica's reply topic when they do not exist.
async fn create_topics(
    cfg: &BusConfig,
    turns_topic: &str,
    reply_topic: &str,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client_config(cfg)
        .create()
        .map_err(|e| format!("cannot create the admin client: {e}"))?;
    let partitions = i32::try_from(cfg.partitions).unwrap_or(i32::MAX);
    let topics = [
        NewTopic::new(turns_topic, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(reply_topic, 1, TopicReplication::Fixed(1)),
    ];
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = admin
        .create_topics(topics.iter(), &opts)
        .await
        .map_err(|e| format!("cannot create topics: {e}"))?;
    for r in created {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("cannot create topic {topic}: {code}")),
        }
    }
    Ok(())
}

/// Which of our topics the broker no longer has, if any (a broker that restarted without
/// its data). Blocking (a broker round trip).
fn missing_topic(shared: &Shared) -> Result<Option<String>, KafkaError> {
    let client = shared.producer.client();
    // All topics: asking for one by name could make a broker that auto-creates topics
    // create it with its default layout.
    let metadata = client.fetch_metadata(None, Duration::from_secs(3))?;
    for name in [&shared.turns_topic, &shared.reply_topic] {
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name.as_str())
            .filter(|t| t.error().is_none() && !t.partitions().is_empty());
        if found.is_none() {
            return Ok(Some(format!("topic {name} is gone")));
        }
    }
    Ok(None)
}

/// Is the broker reachable, and does it still have our topics? Checked every 2 s: `/health`
/// reads the first; when the second fails (a broker restarted without its data), the
/// topics are created again and callers publish their waiting turns again at once.
async fn probe_loop(shared: Arc<Shared>, stop: CancellationToken) -> Result<(), Failure> {
    loop {
        let probe = {
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || missing_topic(&shared))
        };
        let (up, reset) = match probe.await {
            Ok(Ok(reset)) => (true, reset),
            _ => (false, None),
        };
        let was = shared.broker_up.swap(up, Ordering::Relaxed);
        if was != up {
            if up {
                tracing::info!(replica = %shared.replica, "bus: broker reachable again");
            } else {
                shared.note_error("broker unreachable", &shared.cfg.brokers);
            }
        }
        if let Some(why) = reset {
            let waiting = lock(&shared.pending).len();
            tracing::warn!(
                replica = %shared.replica,
                waiting,
                "bus: the broker lost its log ({why}); creating the topics again and \
                 publishing the waiting turns again"
            );
            metrics::counter!("moltbot_bus_log_resets_total").increment(1);
            match create_topics(&shared.cfg, &shared.turns_topic, &shared.reply_topic).await {
                Ok(()) => shared.epoch.send_modify(|e| *e += 1),
                Err(e) => shared.note_error("cannot recreate the topics", e),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}

impl MessageBus for KafkaBus {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn submit(
        &self,
        req: TurnRequest,
        events: Option<mpsc::Sender<TurnEvent>>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<TurnOutcome, EngineError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let turn_id = req
                .turn_id
                .clone()
                .unwrap_or_else(|| format!("turn-{}", uuid::Uuid::new_v4()));
            let session_id = req.session_id.clone();
            let cancel = cancel.child_token();
            // Events pass through an unbounded hop so that one slow caller never holds up
            // the reply loop; a caller that goes away cancels its turn.
            let events = events.map(|out| {
                let (tx, mut rx) = mpsc::unbounded_channel::<TurnEvent>();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    while let Some(e) = rx.recv().await {
                        if out.send(e).await.is_err() {
                            cancel.cancel();
                            break;
                        }
                    }
                });
                tx
            });
            let (done_tx, done_rx) = oneshot::channel();
            let heard = Arc::new(tokio::sync::Notify::new());
            lock(&shared.pending).insert(
                turn_id.clone(),
                Pending {
                    events,
                    done: Some(done_tx),
                    run: None,
                    heard: heard.clone(),
                },
            );
            // However this ends, the caller stops waiting.
            struct Unregister(Arc<Shared>, String);
            impl Drop for Unregister {
                fn drop(&mut self) {
                    lock(&self.0.pending).remove(&self.1);
                }
            }
            let _unregister = Unregister(shared.clone(), turn_id.clone());

            let mut req = req;
            req.turn_id = Some(turn_id.clone());
            let record = TurnRecord::Turn {
                turn: Box::new(req),
                reply_to: shared.reply_topic.clone(),
            };
            let payload = serde_json::to_vec(&record)
                .map_err(|e| EngineError::Bus(format!("cannot encode the turn: {e}")))?;
            // Subscribed before publishing, so a lost log noticed from now on counts.
            let mut epoch = shared.epoch.subscribe();
            let sent = tokio::select! {
                r = publish(&shared, &session_id, &payload) => r,
                () = cancel.cancelled() => return Err(ModelError::Cancelled.into()),
            };
            if let Err(e) = sent {
                return Err(EngineError::Bus(format!("cannot publish the turn: {e}")));
            }
            shared.submitted.fetch_add(1, Ordering::Relaxed);
            let timeout = Duration::from_secs(shared.cfg.turn_timeout_secs);
            let deadline = tokio::time::Instant::now() + timeout;
            let mut done_rx = done_rx;
            // A turn or its reply can be lost with a broker that restarts without what it
            // had not yet written out, or without its topics. Then publish the turn again —
            // at once when our topics were found gone, else after SILENCE without a word
            // about it (its id makes a second run harmless: a stored reply is replayed) —
            // and every second while publishing fails.
            let mut publish_at = tokio::time::Instant::now() + SILENCE;
            loop {
                tokio::select! {
                    r = &mut done_rx => {
                        return r.unwrap_or_else(|_| Err(EngineError::Bus("the reply was lost".into())));
                    }
                    () = cancel.cancelled() => {
                        let stop = TurnRecord::Cancel { turn_id: turn_id.clone() };
                        if let Ok(payload) = serde_json::to_vec(&stop) {
                            // Best effort: the turn also stops when its reply finds nobody.
                            let _ = shared.producer.send_result(
                                FutureRecord::to(&shared.turns_topic).key(&session_id).payload(&payload),
                            );
                        }
                        return Err(ModelError::Cancelled.into());
                    }
                    () = tokio::time::sleep_until(deadline) => {
                        return Err(EngineError::Bus(format!(
                            "no replica answered the turn within {} s",
                            timeout.as_secs()
                        )));
                    }
                    Ok(()) = epoch.changed() => publish_at = tokio::time::Instant::now(),
                    () = heard.notified() => publish_at = tokio::time::Instant::now() + SILENCE,
                    () = tokio::time::sleep_until(publish_at) => {
                        publish_at = match publish(&shared, &session_id, &payload).await {
                            Ok(()) => {
                                metrics::counter!("moltbot_bus_republished_total").increment(1);
                                tracing::info!(%turn_id, "bus: turn published again (its topic was recreated, or nothing was heard of it)");
                                tokio::time::Instant::now() + SILENCE
                            }
                            Err(e) => {
                                shared.note_error("cannot publish a turn again (retrying)", e);
                                tokio::time::Instant::now() + Duration::from_secs(1)
                            }
                        };
                    }
                }
            }
        })
    }

    fn health(&self) -> BusHealth {
        let s = &self.shared;
        let broker_up = s.broker_up.load(Ordering::Relaxed);
        let assigned = self.assigned();
        BusHealth {
            ok: broker_up,
            kind: "kafka",
            detail: serde_json::json!({
                "broker_reachable": broker_up,
                "partitions": assigned,
                "pending": lock(&s.pending).len(),
                "running": lock(&s.running).len(),
                "unfinished_offsets": lock(&s.offsets).running(),
                "rebalances": s.rebalances.load(Ordering::Relaxed),
                "submitted": s.submitted.load(Ordering::Relaxed),
                "ran": s.ran.load(Ordering::Relaxed),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moltbot_engine::{ToolEvent, ToolPhase};

    #[test]
    fn adjacent_deltas_join_and_tool_steps_keep_their_place() {
        let tool = TurnEvent::Tool(ToolEvent {
            call_id: "c".into(),
            name: "t".into(),
            step: 1,
            phase: ToolPhase::Start {
                arguments: "{}".into(),
            },
        });
        let got = coalesce(vec![
            TurnEvent::Delta("a".into()),
            TurnEvent::Delta("b".into()),
            tool.clone(),
            TurnEvent::Delta("c".into()),
        ]);
        assert_eq!(
            got,
            vec![
                TurnEvent::Delta("ab".into()),
                tool,
                TurnEvent::Delta("c".into())
            ]
        );
        assert!(coalesce(Vec::new()).is_empty());
    }
}
