//! The agent loop: the model proposes tool calls, the tools run, their results go back to
//! the model, until it answers or the step/time budget is spent.
//!
//! Only the tools relevant to the turn are offered (the registry's selection, plus the tool
//! the turn's intent names); a turn offered no tools never enters this loop. Every call and
//! result is streamed as a [`ToolEvent`]. Tool failures are told to the model (it can retry
//! or explain), never to the user as a failed turn; only cancellation ends the turn early.

use crate::engine::{Engine, Gathered, TurnEvent, Watch};
use crate::{EngineError, SessionEventKind};
use moltbot_core::config::AgentConfig;
use moltbot_core::{
    ChatMessage, ChatRequest, FinishReason, ModelError, Tool, ToolCall, ToolCallDelta, ToolChoice,
    ToolContext, ToolError, Usage,
};
use moltbot_tools::skills::{Skill, Skills};
use moltbot_tools::Registry;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the engine needs to run tools: the registry and the loop's budget.
pub struct Toolbox {
    pub registry: Arc<Registry>,
    pub cfg: AgentConfig,
    /// Skills from the skills folder (hot-reloaded), when enabled.
    pub skills: Option<Skills>,
}

/// The tools a turn is offered and whether the first step must call one.
pub(crate) struct TurnTools {
    pub tools: Vec<Arc<dyn Tool>>,
    pub choice: ToolChoice,
    /// The skill the turn matched: its instructions join the system prompt and it is
    /// offered only the tools it declares.
    pub skill: Option<Arc<Skill>>,
    /// Arguments of the chosen tool the intent already decided.
    pub preset: serde_json::Map<String, serde_json::Value>,
    /// The arguments the model is to write for the chosen tool (`None`: any).
    pub fields: Option<Vec<String>>,
}

/// Characters of a tool's output repeated in its [`ToolEvent`] (the model gets the whole
/// output, up to the tool's cap).
const EVENT_OUTPUT_CHARS: usize = 2_000;

/// One step of tool use, streamed while a turn runs and kept in its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "wire::ToolEventWire")]
pub struct ToolEvent {
    pub call_id: String,
    pub name: String,
    /// Model call (1-based) that asked for this tool.
    pub step: u32,
    #[serde(flatten)]
    pub phase: ToolPhase,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum ToolPhase {
    Start {
        arguments: String,
    },
    Result {
        ok: bool,
        /// The output (cut to a preview) or the error message.
        output: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        error_kind: Option<&'static str>,
        ms: f64,
        /// Files the tool produced (a screenshot), base64-encoded.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<AttachmentData>,
    },
}

/// [`ToolEvent`] as read back from the message bus: owned strings, the error kind interned
/// (serde cannot derive a flattened enum holding a `&'static str` directly).
mod wire {
    use super::{AttachmentData, ToolEvent, ToolPhase};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub(super) struct ToolEventWire {
        call_id: String,
        name: String,
        step: u32,
        #[serde(flatten)]
        phase: PhaseWire,
    }

    #[derive(Deserialize)]
    #[serde(tag = "phase", rename_all = "snake_case")]
    enum PhaseWire {
        Start {
            arguments: String,
        },
        Result {
            ok: bool,
            output: String,
            #[serde(default)]
            error_kind: Option<String>,
            ms: f64,
            #[serde(default)]
            attachments: Vec<AttachmentData>,
        },
    }

    impl From<ToolEventWire> for ToolEvent {
        fn from(w: ToolEventWire) -> Self {
            let phase = match w.phase {
                PhaseWire::Start { arguments } => ToolPhase::Start { arguments },
                PhaseWire::Result {
                    ok,
                    output,
                    error_kind,
                    ms,
                    attachments,
                } => ToolPhase::Result {
                    ok,
                    output,
                    error_kind: error_kind.map(|k| moltbot_core::intern::intern(&k)),
                    ms,
                    attachments,
                },
            };
            ToolEvent {
                call_id: w.call_id,
                name: w.name,
                step: w.step,
                phase,
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentData {
    pub mime: String,
    pub bytes: usize,
    pub data_base64: String,
}

/// What an agent run produced besides the reply.
pub(crate) struct AgentResult {
    pub model_id: String,
    pub gathered: Gathered,
    pub steps: Vec<ToolEvent>,
}

impl Engine {
    /// The tools to offer for a turn: the one the intent names first, then those whose
    /// words match the message. Empty (no tools at all) for most turns.
    pub(crate) fn turn_tools(
        &self,
        text: &str,
        intent_tool: Option<&str>,
        intent_args: &std::collections::BTreeMap<String, String>,
        intent_fields: Option<&Vec<String>>,
    ) -> Option<TurnTools> {
        let toolbox = self.toolbox()?;
        if !toolbox.cfg.enabled {
            return None;
        }
        let skill = toolbox
            .skills
            .as_ref()
            .and_then(|s| s.select(text, intent_tool));
        let wanted: Vec<String> = intent_tool.map(str::to_string).into_iter().collect();
        let tools = match &skill {
            // A skill uses the tools it declares, the relevant ones first.
            Some(s) => {
                let mut picked = toolbox.registry.select(text, &s.tools, Some(&s.tools));
                picked.truncate(s.tools.len().max(1));
                picked
            }
            None => toolbox.registry.select(text, &wanted, None),
        };
        if tools.is_empty() && skill.is_none() {
            return None;
        }
        // A confident intent that names a loaded tool makes the first step call it: small
        // local models rarely decide to call a tool on their own.
        let choice = match intent_tool {
            Some(name) if tools.iter().any(|t| t.spec().name == name) => {
                ToolChoice::Tool(name.to_string())
            }
            _ => ToolChoice::Auto,
        };
        let preset = match &choice {
            ToolChoice::Tool(_) => intent_args
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
                .collect(),
            _ => serde_json::Map::new(),
        };
        let fields = match &choice {
            ToolChoice::Tool(_) => intent_fields.cloned(),
            _ => None,
        };
        Some(TurnTools {
            tools,
            choice,
            skill,
            preset,
            fields,
        })
    }

    /// Run the loop: model → tool calls → results → model … Text deltas and tool events go
    /// to `events` and the session's watchers as they happen.
    pub(crate) async fn run_agent(
        &self,
        mut request: ChatRequest,
        turn_tools: TurnTools,
        ctx: ToolContext,
        events: Option<mpsc::Sender<TurnEvent>>,
        cancel: CancellationToken,
        watch: Watch<'_>,
    ) -> Result<AgentResult, EngineError> {
        let cfg = self.toolbox().map(|t| t.cfg.clone()).unwrap_or_default();
        if let Some(skill) = &turn_tools.skill {
            if let Some(system) = request
                .messages
                .iter_mut()
                .find(|m| m.role == moltbot_core::Role::System)
            {
                system.content.push_str("\n\n");
                system.content.push_str(&skill.prompt());
            }
            tracing::info!(skill = %skill.name, "skill applied to the turn");
        }
        let specs: Vec<serde_json::Value> = turn_tools
            .tools
            .iter()
            .map(|t| t.spec().to_openai())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(cfg.turn_timeout_secs);
        let mut out = Gathered::default();
        let mut usage = Usage::default();
        let mut steps = Vec::new();
        let mut model_id = String::new();
        for step in 1..=cfg.max_steps {
            // The last step, or one past the time budget, must answer with what it has.
            let offer = step < cfg.max_steps && Instant::now() < deadline;
            request.tools = if offer { specs.clone() } else { Vec::new() };
            (
                request.tool_choice,
                request.tool_arguments,
                request.tool_fields,
            ) = if step == 1 {
                (
                    turn_tools.choice.clone(),
                    turn_tools.preset.clone(),
                    turn_tools.fields.clone(),
                )
            } else {
                (ToolChoice::Auto, serde_json::Map::new(), None)
            };
            if !out.text.is_empty() && !out.text.ends_with('\n') {
                // Keep the text of separate steps apart, as it was streamed.
                out.text.push_str("\n\n");
                self.direct("\n\n", events.clone(), watch).await;
            }
            let generated = self
                .generate(request.clone(), events.clone(), cancel.clone(), Some(watch))
                .await;
            let (id, g) = match generated {
                // A model made to call a tool that cannot write a valid call gets the
                // step again with the choice left to it.
                Err(EngineError::Model(ModelError::Protocol(why)))
                    if request.tool_choice != ToolChoice::Auto =>
                {
                    tracing::info!(reason = %why, "forced tool call failed; asking again freely");
                    request.tool_choice = ToolChoice::Auto;
                    self.generate(request.clone(), events.clone(), cancel.clone(), Some(watch))
                        .await?
                }
                other => other?,
            };
            model_id = id;
            usage.prompt_tokens += g.usage.prompt_tokens;
            usage.completion_tokens += g.usage.completion_tokens;
            out.text.push_str(&g.text);
            out.finish_reason = g.finish_reason;
            if g.tool_calls.is_empty() || !offer {
                break;
            }
            let mut calls = complete_calls(g.tool_calls, step);
            if let ToolChoice::Tool(name) = &turn_tools.choice {
                // What the intent decided fills in what the model left out.
                for call in calls.iter_mut().filter(|c| &c.name == name) {
                    fill_preset(call, &turn_tools.preset);
                }
            }
            request
                .messages
                .push(ChatMessage::tool_calls(g.text, calls.clone()));
            for call in calls {
                let result = self
                    .call_tool(
                        &turn_tools.tools,
                        &call,
                        step,
                        &ctx,
                        deadline,
                        &events,
                        watch,
                        &cfg,
                    )
                    .await;
                if cancel.is_cancelled() {
                    return Err(ModelError::Cancelled.into());
                }
                request
                    .messages
                    .push(ChatMessage::tool_result(call.id.clone(), result.2));
                steps.push(result.0);
                steps.push(result.1);
            }
        }
        if out.finish_reason == FinishReason::ToolCalls {
            // Steps ran out while the model still wanted tools.
            out.finish_reason = FinishReason::Length;
        }
        out.usage = usage;
        Ok(AgentResult {
            model_id,
            gathered: out,
            steps,
        })
    }

    /// Run one call and report it; returns the start and result events and the text for
    /// the model.
    #[expect(clippy::too_many_arguments, reason = "one call site; the turn's parts")]
    async fn call_tool(
        &self,
        tools: &[Arc<dyn Tool>],
        call: &ToolCall,
        step: u32,
        ctx: &ToolContext,
        deadline: Instant,
        events: &Option<mpsc::Sender<TurnEvent>>,
        watch: Watch<'_>,
        cfg: &AgentConfig,
    ) -> (ToolEvent, ToolEvent, String) {
        let event = |phase| ToolEvent {
            call_id: call.id.clone(),
            name: call.name.clone(),
            step,
            phase,
        };
        let start = event(ToolPhase::Start {
            arguments: call.arguments.clone(),
        });
        self.tool_event(start.clone(), events, watch).await;
        let started = Instant::now();
        let budget = Duration::from_secs(cfg.tool_timeout_secs)
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_secs(1));
        let result = run_one(tools, call, ctx, budget).await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let label = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        let name = if tools.iter().any(|t| t.spec().name == call.name) {
            call.name.clone()
        } else {
            "unknown".to_string()
        };
        metrics::counter!("moltbot_tool_calls_total", "tool" => name.clone(), "result" => label)
            .increment(1);
        metrics::histogram!("moltbot_tool_call_duration", "tool" => name).record(ms);
        let (for_model, phase) = match result {
            Ok(output) => {
                let attachments = output
                    .attachments
                    .iter()
                    .map(|a| AttachmentData {
                        mime: a.mime.clone(),
                        bytes: a.data.len(),
                        data_base64: base64::Engine::encode(
                            &base64::engine::general_purpose::STANDARD,
                            &a.data,
                        ),
                    })
                    .collect();
                let preview = preview(&output.text);
                (
                    output.text,
                    ToolPhase::Result {
                        ok: true,
                        output: preview,
                        error_kind: None,
                        ms,
                        attachments,
                    },
                )
            }
            Err(e) => {
                tracing::info!(tool = %call.name, kind = e.kind(), cause = %e, "tool call failed");
                let text = format!("error ({}): {e}", e.kind());
                (
                    text.clone(),
                    ToolPhase::Result {
                        ok: false,
                        output: text,
                        error_kind: Some(e.kind()),
                        ms,
                        attachments: Vec::new(),
                    },
                )
            }
        };
        let done = event(phase);
        self.tool_event(done.clone(), events, watch).await;
        (start, done, for_model)
    }

    async fn tool_event(
        &self,
        event: ToolEvent,
        events: &Option<mpsc::Sender<TurnEvent>>,
        watch: Watch<'_>,
    ) {
        self.publish(|| watch.event(SessionEventKind::Tool(event.clone())));
        if let Some(tx) = events {
            let _ = tokio::time::timeout(
                crate::engine::STALLED_READER,
                tx.send(TurnEvent::Tool(event)),
            )
            .await;
        }
    }
}

/// Find the tool, parse the arguments and run the call within `budget`, stopping when the
/// turn is cancelled. The output is capped at the tool's limit.
async fn run_one(
    tools: &[Arc<dyn Tool>],
    call: &ToolCall,
    ctx: &ToolContext,
    budget: Duration,
) -> Result<moltbot_core::ToolOutput, ToolError> {
    let Some(tool) = tools.iter().find(|t| t.spec().name == call.name) else {
        let offered: Vec<&str> = tools.iter().map(|t| t.spec().name.as_str()).collect();
        return Err(ToolError::Unavailable(format!(
            "no tool named `{}` in this turn; offered: {}",
            call.name,
            offered.join(", ")
        )));
    };
    let arguments: serde_json::Value = if call.arguments.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(&call.arguments).map_err(|e| {
            ToolError::InvalidArguments(format!("the arguments are not valid JSON ({e})"))
        })?
    };
    if !arguments.is_object() {
        return Err(ToolError::InvalidArguments(format!(
            "the arguments must be a JSON object, got {arguments}"
        )));
    }
    let cancel = ctx.cancel.child_token();
    let _stop = cancel.clone().drop_guard();
    let call_ctx = ToolContext {
        cancel: cancel.clone(),
        timeout: budget,
        ..ctx.clone()
    };
    let output = tokio::select! {
        r = tokio::time::timeout(budget, tool.call(arguments, &call_ctx)) => {
            r.unwrap_or(Err(ToolError::Timeout(budget)))?
        }
        () = ctx.cancel.cancelled() => return Err(ToolError::Cancelled),
    };
    Ok(output.cap(tool.output_cap()).0)
}

/// Add the preset arguments a call does not set itself.
fn fill_preset(call: &mut ToolCall, preset: &serde_json::Map<String, serde_json::Value>) {
    if preset.is_empty() {
        return;
    }
    let Ok(serde_json::Value::Object(mut args)) = serde_json::from_str(&call.arguments) else {
        return;
    };
    for (k, v) in preset {
        args.entry(k.clone()).or_insert_with(|| v.clone());
    }
    call.arguments = serde_json::Value::Object(args).to_string();
}

/// Calls with their fragments joined; a call the provider sent without an id gets one.
fn complete_calls(deltas: Vec<ToolCallDelta>, step: u32) -> Vec<ToolCall> {
    deltas
        .into_iter()
        .enumerate()
        .map(|(i, d)| ToolCall {
            id: d.id.unwrap_or_else(|| format!("call_{step}_{i}")),
            name: d.name.unwrap_or_default(),
            arguments: d.arguments,
        })
        .collect()
}

fn preview(text: &str) -> String {
    match text.char_indices().nth(EVENT_OUTPUT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests;
