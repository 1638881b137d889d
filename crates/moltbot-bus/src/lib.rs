//! Scale-out over Kafka: the [`KafkaBus`] implementation of the engine's
//! [`MessageBus`](moltbot_engine::MessageBus).
//!
//! # How a turn travels
//! 1. The replica that receives a turn (HTTP, SSE, WebSocket, a channel) registers it as
//!    pending and publishes it to `<prefix>.turns`, keyed by session id, naming its own
//!    reply topic `<prefix>.replies.<replica>`.
//! 2. Kafka's consumer group gives each partition, so each session, to one replica. That
//!    replica runs the session's turns one at a time in topic order (different sessions run
//!    in parallel) with [`Engine::turn_here`](moltbot_engine::Engine::turn_here), streaming
//!    `started`, the reply's events and then `done` or `failed` to the reply topic.
//! 3. The receiving replica reads its reply topic and hands events and outcome to the
//!    waiting caller.
//!
//! # Nothing lost, nothing doubled
//! A turn's offset is stored for commit only after its reply is stored and its outcome
//! delivered to the reply topic, and only once every earlier turn of the partition is done
//! too ([`offsets`]). A replica that dies mid-turn leaves the turn uncommitted, so after the
//! rebalance another replica reads it again; turn ids make that safe: the store keeps one
//! user message and one reply per turn id and a turn whose reply is stored is answered from
//! the store, not run again. A caller follows the newest run of its turn (`started` names
//! it) and takes the first outcome, so redelivery never gives it two replies.
//!
//! # Layout
//! - [`wire`]: the JSON records on the two topics.
//! - [`offsets`]: per-partition tracking of which offsets may be committed.
//! - [`queues`]: one queue per session so a session's turns run in order.
//! - [`kafka`]: [`KafkaBus`]: topics, producer, the two consumer loops, health.

pub mod kafka;
pub mod offsets;
pub mod queues;
pub mod wire;

pub use kafka::{BusError, KafkaBus};
