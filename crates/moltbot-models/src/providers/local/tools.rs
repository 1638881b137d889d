//! Tool calling for the local model, which has no tool API: the offered tools are described
//! in the system prompt, the model answers `<tool_call>{"name": …, "arguments": {…}}</tool_call>`,
//! and a strict parser turns that into a [`ChatChunk::ToolCall`].
//!
//! Small models rarely choose to call a tool on their own, so when the caller names the
//! tool (`ToolChoice::Tool`, set by the agent loop when the turn's intent names one) the
//! answer is started for the model — `<tool_call>{"name": "cron", "arguments": {` — and
//! it only writes the arguments. Earlier calls and results in the conversation are shown
//! in the same text form.
//!
//! While tools are offered the reply is not streamed piece by piece: it is gathered, parsed,
//! and sent as one tool call or one text.

use futures::StreamExt;
use moltbot_core::{
    ChatChunk, ChatMessage, ChatRequest, ChunkStream, FinishReason, ModelError, Role,
    ToolCallDelta, ToolChoice,
};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// How a request with tools is answered.
pub(super) struct ToolMode {
    names: Vec<String>,
    /// Text the answer starts with (written for the model).
    pub prefill: String,
    /// The grammar the arguments must follow (a named tool's schema); the prefill then
    /// ends right before the arguments object.
    pub grammar: Option<String>,
}

/// Fold the tools into the messages; `None` when the request offers none.
pub(super) fn prepare(request: &mut ChatRequest) -> Option<ToolMode> {
    if request.tools.is_empty() {
        return None;
    }
    // Once a result is back, small models answer better without the tool list in view (it
    // tempts them to talk about tools); a further call still parses.
    let after_result = request
        .messages
        .last()
        .is_some_and(|m| m.role == Role::Tool);
    let mut names = Vec::new();
    let mut schemas: Vec<(String, serde_json::Value)> = Vec::new();
    let example = request.tools[0]["function"]["name"]
        .as_str()
        .unwrap_or("tool")
        .to_string();
    let mut section = format!(
        "You can use tools. To use one, answer with only a line like:\n\
         {OPEN}{{\"name\": \"{example}\", \"arguments\": {{...}}}}{CLOSE}\n\
         After the result comes back, answer the user.\nTools:\n"
    );
    for tool in &request.tools {
        let f = &tool["function"];
        let Some(name) = f["name"].as_str() else {
            continue;
        };
        names.push(name.to_string());
        schemas.push((name.to_string(), f["parameters"].clone()));
        section.push_str(&format!(
            "- {name}: {} Arguments: {}\n",
            f["description"].as_str().unwrap_or(""),
            compact_schema(&f["parameters"])
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    section.push_str(&format!("Current time (UTC): {}", utc_minute(now)));
    if after_result {
        section.clear();
        // An answer built on a tool's result should stick to it: sample conservatively.
        request.temperature = Some(request.temperature.unwrap_or(0.2).min(0.2));
    }
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    let mut called: Vec<(String, String)> = Vec::new();
    let mut system_done = false;
    // After a result, only the question and what the tools returned are shown: a small
    // model otherwise copies one of its earlier replies.
    let question_at = request
        .messages
        .iter()
        .rposition(|m| m.role == Role::User)
        .unwrap_or(0);
    for (i, m) in request.messages.drain(..).enumerate() {
        if after_result && i < question_at && m.role != Role::System {
            continue;
        }
        match m.role {
            Role::System if !system_done => {
                system_done = true;
                let content = if section.is_empty() {
                    m.content
                } else {
                    format!("{}\n\n{section}", m.content)
                };
                messages.push(ChatMessage::new(Role::System, content));
            }
            // Earlier calls are not shown as JSON (small models then imitate it in their
            // answers); their results say which tool produced them.
            Role::Assistant if !m.tool_calls.is_empty() => {
                for c in &m.tool_calls {
                    called.push((c.id.clone(), c.name.clone()));
                }
                if !m.content.trim().is_empty() {
                    messages.push(ChatMessage::new(Role::Assistant, m.content));
                }
            }
            // Chat templates of small models know no `tool` role: results come as user text.
            Role::Tool => {
                let name = called
                    .iter()
                    .find(|(id, _)| Some(id) == m.tool_call_id.as_ref())
                    .map_or("tool", |(_, n)| n.as_str());
                messages.push(ChatMessage::new(
                    Role::User,
                    format!("[{name} result]\n{}\n\nUse this to answer.", m.content),
                ));
            }
            _ => messages.push(m),
        }
    }
    if !system_done && !section.is_empty() {
        messages.insert(0, ChatMessage::new(Role::System, section));
    }
    request.messages = messages;
    request.tools.clear();
    let mut grammar = None;
    let prefill = match &request.tool_choice {
        ToolChoice::Tool(name) if !after_result && names.contains(name) => {
            // The call is started for the model and its arguments are held to the
            // tool's schema by a grammar: small models write broken JSON otherwise.
            let schema = schemas
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            grammar = Some(super::grammar::arguments_grammar(
                &schema,
                &request.tool_arguments,
                request.tool_fields.as_deref(),
            ));
            format!("{OPEN}{{\"name\": \"{name}\", \"arguments\": ")
        }
        ToolChoice::Required if !after_result => format!("{OPEN}{{\"name\": \""),
        _ => String::new(),
    };
    if grammar.is_none() {
        // A grammar ends the answer itself (and `</tool_call>` is valid text inside one of
        // its strings); a free answer ends at the closing tag.
        request.stop.push(CLOSE.to_string());
    }
    Some(ToolMode {
        names,
        prefill,
        grammar,
    })
}

/// `YYYY-MM-DDTHH:MM` for Unix seconds (civil-from-days, proleptic Gregorian), so the
/// model can turn "tomorrow at 9" into a date without a date library here.
fn utc_minute(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}",
        rem / 3_600,
        (rem % 3_600) / 60
    )
}

/// A schema in a few words: `{"url": string, "action": "open"|"snapshot"}`; required
/// fields are marked with `*`.
fn compact_schema(schema: &serde_json::Value) -> String {
    let Some(props) = schema["properties"].as_object() else {
        return "{}".into();
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let fields: Vec<String> = props
        .iter()
        .map(|(k, v)| {
            let ty = match v["enum"].as_array() {
                Some(options) => options
                    .iter()
                    .filter_map(|o| o.as_str())
                    .map(|o| format!("\"{o}\""))
                    .collect::<Vec<_>>()
                    .join("|"),
                None => v["type"].as_str().unwrap_or("any").to_string(),
            };
            let star = if required.contains(&k.as_str()) {
                "*"
            } else {
                ""
            };
            format!("\"{k}\"{star}: {ty}")
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// Gather the answer and turn it into a tool call when it is one.
pub(super) fn parse_stream(inner: ChunkStream, mode: ToolMode) -> ChunkStream {
    Box::pin(async_stream::stream! {
        let mut inner = inner;
        let mut text = String::new();
        let mut rest = Vec::new();
        let mut finish = FinishReason::Stop;
        while let Some(item) = inner.next().await {
            match item {
                Ok(ChatChunk::Text(t)) => text.push_str(&t),
                Ok(ChatChunk::Finish(f)) => {
                    finish = f;
                    break;
                }
                Ok(other) => rest.push(other),
                Err(e) => {
                    yield Err(e);
                    return;
                }
            }
        }
        for other in rest {
            yield Ok(other);
        }
        let text = if mode.grammar.is_some() {
            // The grammar keeps the JSON valid up to where the token budget may have cut
            // it: close what is open.
            format!("{}{}}}", mode.prefill, close_truncated(text.trim()))
        } else {
            format!("{}{text}", mode.prefill)
        };
        match parse_call(&text, &mode.names) {
            Ok(Some((name, arguments))) => {
                yield Ok(ChatChunk::ToolCall(ToolCallDelta {
                    index: 0,
                    id: None,
                    name: Some(name),
                    arguments,
                }));
                yield Ok(ChatChunk::Finish(FinishReason::ToolCalls));
            }
            Ok(None) => {
                yield Ok(ChatChunk::Text(text));
                yield Ok(ChatChunk::Finish(FinishReason::Stop));
            }
            Err(why) if mode.prefill.is_empty() => {
                // The model wrote something call-like that does not parse: keep it as text.
                tracing::debug!(reason = %why, "local model's tool call did not parse");
                yield Ok(ChatChunk::Text(text));
                yield Ok(ChatChunk::Finish(FinishReason::Stop));
            }
            Err(why) => {
                let shown: String = text.chars().take(200).collect();
                yield Err(ModelError::Protocol(format!(
                    "the local model did not write a valid tool call ({why}; ended: {}): {shown}",
                    finish.as_str()
                )));
            }
        }
    })
}

/// Close a JSON text cut short: end an open string, then every open object and array.
fn close_truncated(json: &str) -> String {
    let mut open = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => open.push('}'),
            '[' => open.push(']'),
            '}' | ']' => {
                open.pop();
            }
            _ => {}
        }
    }
    let mut out = json.to_string();
    if escaped {
        out.pop();
    }
    if in_string {
        out.push('"');
    }
    while let Some(c) = open.pop() {
        out.push(c);
    }
    out
}

/// `Ok(Some((name, arguments JSON)))` for a valid call of a known tool, `Ok(None)` for a
/// plain answer, `Err` for a broken call.
fn parse_call(text: &str, names: &[String]) -> Result<Option<(String, String)>, String> {
    let Some(start) = text.find(OPEN) else {
        return Ok(None);
    };
    // Not cut at `</tool_call>`: that text may sit inside a string value.
    let body = text[start + OPEN.len()..].trim_start();
    // The first JSON value; anything after it (the model rambling on) is ignored.
    let mut values = serde_json::Deserializer::from_str(body).into_iter::<serde_json::Value>();
    let value = match values.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(format!("not JSON: {e}")),
        None => return Err("empty".into()),
    };
    let name = value["name"]
        .as_str()
        .ok_or_else(|| "no `name`".to_string())?;
    if !names.iter().any(|n| n == name) {
        return Err(format!("unknown tool `{name}`"));
    }
    let arguments = match &value["arguments"] {
        serde_json::Value::Object(_) => value["arguments"].to_string(),
        serde_json::Value::Null => "{}".to_string(),
        other => return Err(format!("`arguments` must be an object, got {other}")),
    };
    Ok(Some((name.to_string(), arguments)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use moltbot_core::ToolCall;
    use serde_json::json;

    fn request(choice: ToolChoice) -> ChatRequest {
        ChatRequest {
            messages: vec![
                ChatMessage::new(Role::System, "Be brief."),
                ChatMessage::new(Role::User, "fetch https://example.org"),
            ],
            tools: vec![json!({"type": "function", "function": {
                "name": "web_fetch", "description": "Fetch a page.",
                "parameters": {"type": "object", "properties": {"url": {"type": "string"},
                    "mode": {"type": "string", "enum": ["text", "raw"]}}, "required": ["url"]}}})],
            tool_choice: choice,
            ..ChatRequest::default()
        }
    }

    #[test]
    fn tools_go_into_the_system_prompt_and_a_named_tool_is_started() {
        let mut r = request(ToolChoice::Tool("web_fetch".into()));
        let mode = prepare(&mut r).unwrap();
        assert!(r.tools.is_empty());
        assert_eq!(r.messages.len(), 2);
        let system = &r.messages[0].content;
        assert!(
            system.starts_with("Be brief.\n\nYou can use tools."),
            "{system}"
        );
        assert!(
            system.contains(
                r#"- web_fetch: Fetch a page. Arguments: {"mode": "text"|"raw", "url"*: string}"#
            ),
            "{system}"
        );
        assert_eq!(
            mode.prefill,
            r#"<tool_call>{"name": "web_fetch", "arguments": "#
        );
        let grammar = mode.grammar.unwrap();
        assert!(
            grammar.starts_with(r#"root ::= "{" "\"url\": " f0"#),
            "{grammar}"
        );
        assert!(
            !r.stop.contains(&CLOSE.to_string()),
            "the grammar ends the call"
        );
        // Auto: no prefill, no grammar; the answer ends at the closing tag.
        let mut r = request(ToolChoice::Auto);
        let mode = prepare(&mut r).unwrap();
        assert_eq!(mode.prefill, "");
        assert!(mode.grammar.is_none());
        assert!(r.stop.contains(&CLOSE.to_string()));
    }

    #[test]
    fn earlier_calls_and_results_become_text() {
        let mut r = request(ToolChoice::Tool("web_fetch".into()));
        r.messages.push(ChatMessage::tool_calls(
            "",
            vec![ToolCall {
                id: "c1".into(),
                name: "web_fetch".into(),
                arguments: r#"{"url":"https://example.org"}"#.into(),
            }],
        ));
        r.messages
            .push(ChatMessage::tool_result("c1", "Example Domain"));
        let mode = prepare(&mut r).unwrap();
        // The call itself is not shown; its result names the tool.
        assert_eq!(r.messages.len(), 3);
        // With the result back, the tool list is left out of the system prompt.
        assert_eq!(r.messages[0].content, "Be brief.");
        assert_eq!(r.messages[2].role, Role::User);
        assert_eq!(
            r.messages[2].content,
            "[web_fetch result]\nExample Domain\n\nUse this to answer."
        );
        // After a result the model answers freely.
        assert_eq!(mode.prefill, "");
    }

    #[test]
    fn utc_minutes() {
        assert_eq!(utc_minute(0), "1970-01-01T00:00");
        assert_eq!(
            utc_minute(1_795_075_200 + 9 * 3600 + 30 * 60),
            "2026-11-19T17:30"
        );
        assert_eq!(utc_minute(951_782_400), "2000-02-29T00:00");
    }

    #[test]
    fn cut_json_is_closed() {
        assert_eq!(close_truncated(r#"{"a": "b"}"#), r#"{"a": "b"}"#);
        assert_eq!(close_truncated(r#"{"a": "b c"#), r#"{"a": "b c"}"#);
        assert_eq!(close_truncated(r#"{"a": "x\"#), r#"{"a": "x"}"#);
        assert_eq!(close_truncated(r#"{"a": ["x", "y"#), r#"{"a": ["x", "y"]}"#);
        assert_eq!(close_truncated(r#"{"a": "}{""#), r#"{"a": "}{"}"#);
    }

    #[test]
    fn the_parser_is_strict() {
        let names = vec!["web_fetch".to_string()];
        let ok = parse_call(
            r#"<tool_call>{"name": "web_fetch", "arguments": {"url": "https://a.b"}} and more"#,
            &names,
        );
        assert_eq!(
            ok,
            Ok(Some((
                "web_fetch".into(),
                r#"{"url":"https://a.b"}"#.into()
            )))
        );
        assert_eq!(parse_call("Just an answer.", &names), Ok(None));
        assert!(
            parse_call(r#"<tool_call>{"name": "rm", "arguments": {}}"#, &names)
                .unwrap_err()
                .contains("unknown tool `rm`")
        );
        assert!(parse_call(
            r#"<tool_call>{"name": "web_fetch", "arguments": "x"}"#,
            &names
        )
        .unwrap_err()
        .contains("must be an object"));
        assert!(parse_call("<tool_call>{\"name\": \"web_f", &names)
            .unwrap_err()
            .contains("not JSON"));
    }

    #[tokio::test]
    async fn a_prefilled_call_is_completed_from_the_model_text() {
        let mut r = request(ToolChoice::Tool("web_fetch".into()));
        let mode = prepare(&mut r).unwrap();
        let model_text: ChunkStream = Box::pin(futures::stream::iter(vec![
            Ok(ChatChunk::Text(r#"{"url": "https://example.org"}"#.into())),
            Ok(ChatChunk::Finish(FinishReason::Stop)),
        ]));
        let out: Vec<_> = parse_stream(model_text, mode).collect().await;
        match &out[0] {
            Ok(ChatChunk::ToolCall(d)) => {
                assert_eq!(d.name.as_deref(), Some("web_fetch"));
                assert_eq!(d.arguments, r#"{"url":"https://example.org"}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            out[1],
            Ok(ChatChunk::Finish(FinishReason::ToolCalls))
        ));
    }
}
