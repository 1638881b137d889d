//! The records on the bus's topics, as JSON (readable with any Kafka tool).

use moltbot_engine::{TurnEvent, TurnOutcome, TurnRequest, WireError};
use serde::{Deserialize, Serialize};

/// A record of the turns topic, keyed by session id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TurnRecord {
    /// Run this turn and send what happens to topic `reply_to`.
    Turn {
        turn: Box<TurnRequest>,
        reply_to: String,
    },
    /// The caller gave up: stop the turn if it is still running. Keyed like the turn, so
    /// it is read after it.
    Cancel { turn_id: String },
}

/// A record of a replica's reply topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplyRecord {
    pub turn_id: String,
    /// One execution of the turn; a redelivered turn runs under a new id.
    pub run: String,
    #[serde(flatten)]
    pub body: ReplyBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReplyBody {
    /// A replica started running the turn.
    Started {
        replica: String,
    },
    /// A piece of the reply, or a tool step.
    Event {
        event: TurnEvent,
    },
    /// The turn is stored and answered.
    Done {
        outcome: Box<TurnOutcome>,
    },
    Failed {
        error: WireError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use moltbot_core::{FinishReason, Usage};
    use moltbot_engine::{Overrides, RouteInfo};

    #[test]
    fn records_round_trip() {
        let turn = TurnRequest {
            session_id: "s1".into(),
            turn_id: Some("t1".into()),
            run_id: None,
            user: Some("ann".into()),
            message: "hello".into(),
            channel: "telegram",
            origin: None,
            overrides: Overrides {
                max_tokens: Some(12),
                stop: vec!["\n".into()],
                ..Overrides::default()
            },
        };
        let rec = TurnRecord::Turn {
            turn: Box::new(turn),
            reply_to: "moltbot.replies.a".into(),
        };
        let json = serde_json::to_string(&rec).unwrap();
        let TurnRecord::Turn { turn, reply_to } = serde_json::from_str(&json).unwrap() else {
            panic!("not a turn: {json}");
        };
        assert_eq!(turn.channel, "telegram");
        assert_eq!(turn.overrides.max_tokens, Some(12));
        assert_eq!(turn.overrides.stop, vec!["\n".to_string()]);
        assert_eq!(reply_to, "moltbot.replies.a");

        let outcome = TurnOutcome {
            session_id: "s1".into(),
            reply: "hi".into(),
            model: "m".into(),
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 1,
            },
            finish_reason: FinishReason::Stop,
            latency_ms: 1.5,
            route: Some(RouteInfo::unrouted("understanding_unavailable")),
            tools: Vec::new(),
        };
        let rec = ReplyRecord {
            turn_id: "t1".into(),
            run: "r1".into(),
            body: ReplyBody::Done {
                outcome: Box::new(outcome),
            },
        };
        let json = serde_json::to_string(&rec).unwrap();
        let back: ReplyRecord = serde_json::from_str(&json).unwrap();
        let ReplyBody::Done { outcome } = back.body else {
            panic!("{json}")
        };
        assert_eq!(outcome.reply, "hi");
        assert_eq!(outcome.route.unwrap().reason, "understanding_unavailable");
        let ev = ReplyRecord {
            turn_id: "t1".into(),
            run: "r1".into(),
            body: ReplyBody::Event {
                event: TurnEvent::Delta("he".into()),
            },
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert!(json.contains(r#""type":"event""#), "{json}");
        let back: ReplyRecord = serde_json::from_str(&json).unwrap();
        assert!(matches!(back.body, ReplyBody::Event { event: TurnEvent::Delta(d) } if d == "he"));
    }
}
