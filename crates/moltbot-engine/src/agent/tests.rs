//! The loop against an in-process scripted model and real registry tools. (Providers'
//! tool-call wire formats are tested against loopback servers in moltbot-models and the
//! gateway's tests.)

use super::*;
use crate::{EngineOptions, ModelSlot, Overrides, TurnRequest};
use futures::future::BoxFuture;
use moltbot_core::{ChatChunk, ChatModel, ChunkStream, Role, ToolOutput, ToolSpec};
use moltbot_store::Store;
use std::sync::Mutex;

/// Asks for `calls` (one per step, in order) while they last, then answers with the last
/// tool result it was given. Records every request.
struct Scripted {
    calls: Mutex<Vec<(String, String)>>,
    seen: Mutex<Vec<ChatRequest>>,
}

impl Scripted {
    fn new(calls: &[(&str, &str)]) -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::new(
                calls
                    .iter()
                    .rev()
                    .map(|(n, a)| (n.to_string(), a.to_string()))
                    .collect(),
            ),
            seen: Mutex::new(Vec::new()),
        })
    }
}

impl ChatModel for Scripted {
    fn id(&self) -> &str {
        "test/scripted"
    }
    fn stream(&self, request: ChatRequest, _cancel: CancellationToken) -> ChunkStream {
        let next = if request.tools.is_empty() {
            None
        } else {
            self.calls.lock().unwrap().pop()
        };
        let last_tool = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::Tool)
            .map(|m| m.content.clone());
        self.seen.lock().unwrap().push(request);
        Box::pin(async_stream::stream! {
            match next {
                Some((name, arguments)) => {
                    yield Ok(ChatChunk::ToolCall(ToolCallDelta {
                        index: 0, id: None, name: Some(name), arguments,
                    }));
                    yield Ok(ChatChunk::Finish(FinishReason::ToolCalls));
                }
                None => {
                    yield Ok(ChatChunk::Text(format!("final: {}", last_tool.unwrap_or_default())));
                    yield Ok(ChatChunk::Usage(Usage { prompt_tokens: 5, completion_tokens: 2 }));
                    yield Ok(ChatChunk::Finish(FinishReason::Stop));
                }
            }
        })
    }
}

/// Upper-cases its `text` argument; `sleep` makes it wait until cancelled.
struct Shout(ToolSpec);

impl Tool for Shout {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    fn output_cap(&self) -> usize {
        40
    }
    fn call<'a>(
        &'a self,
        arguments: serde_json::Value,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolOutput, ToolError>> {
        Box::pin(async move {
            if arguments.get("sleep").is_some() {
                ctx.cancel.cancelled().await;
                return Err(ToolError::Cancelled);
            }
            let text = moltbot_core::tool::args::string(&arguments, "text")?;
            Ok(ToolOutput::text(format!(
                "{} (session {})",
                text.to_uppercase(),
                ctx.session_id
            )))
        })
    }
}

fn engine(model: Arc<Scripted>, cfg: AgentConfig) -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("m.db")).unwrap();
    let engine = Engine::new(store, ModelSlot::ready(model), EngineOptions::default());
    let registry = Arc::new(Registry::new());
    registry.add(
        Arc::new(Shout(ToolSpec {
            name: "shout".into(),
            description: "Say a text loudly.".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"text": {"type": "string"}}}),
        })),
        "builtin",
        &["shout", "loud"],
    );
    engine.set_toolbox(Arc::new(Toolbox {
        registry,
        cfg,
        skills: None,
    }));
    (engine, dir)
}

fn turn(message: &str) -> TurnRequest {
    TurnRequest {
        turn_id: None,
        session_id: "s1".into(),
        run_id: None,
        user: Some("u".into()),
        message: message.into(),
        channel: "test",
        origin: None,
        overrides: Overrides::default(),
    }
}

#[tokio::test]
async fn a_tool_call_runs_and_its_result_reaches_the_model() {
    let model = Scripted::new(&[("shout", r#"{"text":"hello"}"#)]);
    let (engine, _dir) = engine(model.clone(), AgentConfig::default());
    let (tx, mut rx) = mpsc::channel(64);
    let out = engine
        .turn(
            turn("shout hello please"),
            Some(tx),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(out.reply, "final: HELLO (session s1)");
    assert_eq!(out.tools.len(), 2);
    assert!(
        matches!(&out.tools[1].phase, ToolPhase::Result { ok: true, output, .. } if output == "HELLO (session s1)")
    );
    // Usage adds up over both model calls (the tool step reported none).
    assert_eq!(out.usage.completion_tokens, 2);
    let mut streamed = Vec::new();
    while let Some(ev) = rx.recv().await {
        streamed.push(ev);
    }
    assert!(matches!(
        &streamed[0],
        TurnEvent::Tool(ToolEvent {
            phase: ToolPhase::Start { .. },
            ..
        })
    ));
    assert!(matches!(
        &streamed[1],
        TurnEvent::Tool(ToolEvent {
            phase: ToolPhase::Result { .. },
            ..
        })
    ));
    assert!(matches!(streamed.last(), Some(TurnEvent::Delta(d)) if d.starts_with("final")));
    let seen = model.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    // Offered the one relevant tool; the second request carries the call and its result.
    assert_eq!(seen[0].tools.len(), 1);
    let second = &seen[1].messages;
    let asked = &second[second.len() - 2];
    assert_eq!(asked.tool_calls[0].name, "shout");
    assert_eq!(
        second.last().unwrap().tool_call_id.as_deref(),
        Some(asked.tool_calls[0].id.as_str())
    );
    // Only the user's message and the final reply are kept in the session.
    let stored = engine.history("s1", 10).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].content, "final: HELLO (session s1)");
}

#[tokio::test]
async fn a_greeting_is_offered_no_tools() {
    let model = Scripted::new(&[("shout", r#"{"text":"x"}"#)]);
    let (engine, _dir) = engine(model.clone(), AgentConfig::default());
    let out = engine
        .turn(turn("hi"), None, CancellationToken::new())
        .await
        .unwrap();
    assert!(out.tools.is_empty());
    assert!(model.seen.lock().unwrap()[0].tools.is_empty());
}

#[tokio::test]
async fn bad_calls_are_reported_to_the_model_not_the_user() {
    let model = Scripted::new(&[
        ("nosuch", "{}"),
        ("shout", "{not json"),
        ("shout", r#"{"text": 3}"#),
        ("shout", r#"{"text":"ok"}"#),
    ]);
    let (engine, _dir) = engine(model.clone(), AgentConfig::default());
    let out = engine
        .turn(turn("shout it loud"), None, CancellationToken::new())
        .await
        .unwrap();
    let results: Vec<&ToolPhase> = out
        .tools
        .iter()
        .map(|t| &t.phase)
        .filter(|p| matches!(p, ToolPhase::Result { .. }))
        .collect();
    let kinds: Vec<Option<&str>> = results
        .iter()
        .map(|p| match p {
            ToolPhase::Result { error_kind, .. } => *error_kind,
            ToolPhase::Start { .. } => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            Some("tool_unavailable"),
            Some("tool_invalid_arguments"),
            Some("tool_invalid_arguments"),
            None
        ]
    );
    let seen = model.seen.lock().unwrap();
    let told = &seen[1].messages.last().unwrap().content;
    assert!(
        told.contains("no tool named `nosuch`") && told.contains("offered: shout"),
        "{told}"
    );
    let told = &seen[3].messages.last().unwrap().content;
    assert!(told.contains("`text` must be a string, got 3"), "{told}");
    assert_eq!(out.reply, "final: OK (session s1)");
}

#[tokio::test]
async fn the_step_budget_ends_with_an_answer_and_outputs_are_capped() {
    let long = "x".repeat(200);
    let args = format!(r#"{{"text":"{long}"}}"#);
    let model = Scripted::new(&[("shout", &args), ("shout", &args), ("shout", &args)]);
    let cfg = AgentConfig {
        max_steps: 2,
        ..AgentConfig::default()
    };
    let (engine, _dir) = engine(model.clone(), cfg);
    let out = engine
        .turn(turn("shout"), None, CancellationToken::new())
        .await
        .unwrap();
    let seen = model.seen.lock().unwrap();
    // Step 1 called the tool; step 2 (the last) was offered no tools and answered.
    assert_eq!(seen.len(), 2);
    assert!(seen[1].tools.is_empty());
    let result = &seen[1].messages.last().unwrap().content;
    assert!(result.contains("[output cut at 40 of"), "{result}");
    assert!(out.reply.starts_with("final: XXXX"));
}

#[tokio::test(start_paused = true)]
async fn a_slow_tool_times_out_and_the_turn_goes_on() {
    let model = Scripted::new(&[("shout", r#"{"sleep": true}"#)]);
    let cfg = AgentConfig {
        tool_timeout_secs: 2,
        ..AgentConfig::default()
    };
    let (engine, _dir) = engine(model.clone(), cfg);
    let out = engine
        .turn(turn("shout"), None, CancellationToken::new())
        .await
        .unwrap();
    assert!(matches!(
        &out.tools[1].phase,
        ToolPhase::Result {
            error_kind: Some("tool_timeout"),
            ..
        }
    ));
    assert!(
        out.reply.contains("did not finish within 2s"),
        "{}",
        out.reply
    );
}

#[tokio::test]
async fn cancelling_the_turn_stops_a_running_tool() {
    let model = Scripted::new(&[("shout", r#"{"sleep": true}"#)]);
    let (engine, _dir) = engine(model.clone(), AgentConfig::default());
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(64);
    let task = tokio::spawn({
        let engine = engine.clone();
        let cancel = cancel.clone();
        async move { engine.turn(turn("shout"), Some(tx), cancel).await }
    });
    // Wait until the tool has started, then cancel.
    while let Some(ev) = rx.recv().await {
        if matches!(
            ev,
            TurnEvent::Tool(ToolEvent {
                phase: ToolPhase::Start { .. },
                ..
            })
        ) {
            break;
        }
    }
    cancel.cancel();
    let err = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the turn ends promptly")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Model(ModelError::Cancelled)),
        "{err:?}"
    );
}
