//! Tool calls written as text. Models that were given tools but have no native tool-call
//! channel (or ignore it) answer with a JSON object, often in a ```json fence or a
//! `<tool_call>` tag, and small models often get the JSON wrong: a missing brace, a trailing
//! comma, no `name`. These helpers tell such replies apart and make one repair attempt.

use serde_json::Value;

/// What the beginning of a reply says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// Not enough text yet to tell.
    Undecided,
    /// Starts like a tool call: `{`, `[{`, a ```json fence, a `<tool_call>` tag.
    Call,
    /// Starts like prose.
    Text,
}

const TAG_OPEN: &str = "<tool_call>";
const TAG_CLOSE: &str = "</tool_call>";

/// Classify the opening of a reply; `complete` when no more text will come.
pub(crate) fn opening(text: &str, complete: bool) -> Opening {
    let undecided = if complete {
        Opening::Text
    } else {
        Opening::Undecided
    };
    let t = text.trim_start();
    if t.is_empty() {
        return undecided;
    }
    if t.starts_with('{') {
        return Opening::Call;
    }
    if let Some(rest) = t.strip_prefix('[') {
        return match rest.trim_start().chars().next() {
            Some('{') => Opening::Call,
            Some(_) => Opening::Text,
            None => undecided,
        };
    }
    if let Some(rest) = t.strip_prefix("```") {
        let Some((info, body)) = rest.split_once('\n') else {
            return undecided;
        };
        let info = info.trim().to_ascii_lowercase();
        if info == "json" || info == "tool_call" {
            return Opening::Call;
        }
        if !info.is_empty() {
            return Opening::Text;
        }
        return match body.trim_start().chars().next() {
            Some('{') => Opening::Call,
            Some(_) => Opening::Text,
            None => undecided,
        };
    }
    if t.starts_with(TAG_OPEN) {
        return Opening::Call;
    }
    if TAG_OPEN.starts_with(t) {
        return undecided;
    }
    Opening::Text
}

/// Whether the text contains the keys of a tool call (`"name": …` with `"arguments": …` or
/// `"parameters": …`) anywhere, e.g. after a sentence of prose.
pub(crate) fn has_call_shape(text: &str) -> bool {
    has_key(text, "name") && (has_key(text, "arguments") || has_key(text, "parameters"))
}

fn has_key(text: &str, key: &str) -> bool {
    let quoted = format!("\"{key}\"");
    text.match_indices(&quoted)
        .any(|(at, m)| text[at + m.len()..].trim_start().starts_with(':'))
}

/// How a JSON-looking reply fares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Judgement {
    /// Parses and names a tool.
    Call,
    /// Parses, and has nothing of a tool call about it (a JSON answer).
    NotACall,
    /// Does not parse, or has call keys without a tool name.
    Broken,
}

pub(crate) fn judge(text: &str) -> Judgement {
    let body = json_body(text);
    let mut values = serde_json::Deserializer::from_str(body).into_iter::<Value>();
    let mut seen = Vec::new();
    while let Some(next) = values.next() {
        match next {
            Ok(v) => seen.push(v),
            Err(_) => {
                // Prose after the call is fine; a second value that does not parse, or a
                // stray bracket or comma, is not.
                let rest = body[values.byte_offset()..].trim_start();
                if seen.is_empty() || rest.starts_with(['{', '[', '}', ']', ',', ':']) {
                    return Judgement::Broken;
                }
                break;
            }
        }
    }
    if seen.iter().all(is_call) {
        Judgement::Call
    } else if seen.iter().any(has_call_keys) {
        Judgement::Broken
    } else {
        Judgement::NotACall
    }
}

/// One repair attempt: strip fences and tags, drop trailing commas, close an open string
/// and unbalanced brackets of each value. Returns compact JSON (a list when there were
/// several values) that parses and names a tool, or `None`.
pub(crate) fn repair(text: &str) -> Option<String> {
    let mut rest = json_body(text);
    let mut calls = Vec::new();
    while rest.starts_with(['{', '[']) {
        let (fixed, used) = balance(rest);
        let v: Value = serde_json::from_str(&fixed).ok()?;
        if !is_call(&v) {
            return None;
        }
        calls.push(v);
        rest = rest[used..].trim_start();
    }
    let out = match calls.len() {
        0 => return None,
        1 => calls.pop()?,
        _ => Value::Array(calls),
    };
    serde_json::to_string(&out).ok()
}

/// Whether the arguments of a native tool call are usable JSON (empty counts as usable:
/// some tools take none).
pub(crate) fn arguments_parse(arguments: &str) -> bool {
    arguments.trim().is_empty() || serde_json::from_str::<Value>(arguments).is_ok()
}

/// The part of a reply that should be JSON: inside a `<tool_call>` tag or a code fence if
/// there is one, from the first `{` or `[` on.
fn json_body(text: &str) -> &str {
    let mut t = text.trim();
    if let Some(start) = t.find(TAG_OPEN) {
        t = &t[start + TAG_OPEN.len()..];
        if let Some(end) = t.find(TAG_CLOSE) {
            t = &t[..end];
        }
    }
    if let Some(start) = t.find("```") {
        let after = &t[start + 3..];
        // Skip the info string (`json`) up to the end of the fence line.
        let body = after.split_once('\n').map_or(after, |(_, b)| b);
        t = match body.find("```") {
            Some(end) => &body[..end],
            None => body,
        };
    }
    match t.find(['{', '[']) {
        Some(open) => t[open..].trim_end(),
        None => t.trim(),
    }
}

/// Close what is open, drop trailing commas and stray closers, stop after the first value.
/// Returns the fixed value and the bytes of `body` it used.
fn balance(body: &str) -> (String, usize) {
    let mut out = String::with_capacity(body.len() + 8);
    let mut closers: Vec<char> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for (at, c) in body.char_indices() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' => {
                closers.push('}');
                out.push(c);
            }
            '[' => {
                closers.push(']');
                out.push(c);
            }
            '}' | ']' => {
                if closers.last() == Some(&c) {
                    drop_trailing_comma(&mut out);
                    closers.pop();
                    out.push(c);
                    if closers.is_empty() {
                        return (out, at + c.len_utf8());
                    }
                }
                // A closer that closes nothing open is dropped.
            }
            _ => out.push(c),
        }
    }
    if in_string {
        if escaped {
            out.pop();
        }
        // `"room": "hall}}` most likely lost the quote before its closers: put them back
        // outside the string.
        let kept = out.trim_end_matches(['}', ']', ' ', '\n', '\t']).len();
        let moved = out.split_off(kept);
        out.push('"');
        for c in moved.chars() {
            if closers.last() == Some(&c) {
                closers.pop();
                out.push(c);
            }
        }
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    if out.ends_with(':') {
        out.push_str("null");
    }
    drop_trailing_comma(&mut out);
    while let Some(c) = closers.pop() {
        out.push(c);
    }
    (out, body.len())
}

fn drop_trailing_comma(out: &mut String) {
    let trimmed = out.trim_end().len();
    if out[..trimmed].ends_with(',') {
        out.truncate(trimmed - 1);
    }
}

/// A tool call in one of the shapes models write: `{"name", "arguments"|"parameters"}`,
/// `{"function": {…}}`, `{"tool_calls": […]}`, or a list of calls.
fn is_call(v: &Value) -> bool {
    match v {
        Value::Array(calls) => !calls.is_empty() && calls.iter().all(is_call),
        Value::Object(o) => {
            if let Some(f) = o.get("function") {
                return is_call(f);
            }
            if let Some(Value::Array(calls)) = o.get("tool_calls") {
                return !calls.is_empty() && calls.iter().all(is_call);
            }
            let named = o
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.trim().is_empty());
            let args_ok = match o.get("arguments").or_else(|| o.get("parameters")) {
                None | Some(Value::Object(_)) | Some(Value::Null) => true,
                // OpenAI's wire format carries the arguments as a JSON string.
                Some(Value::String(s)) => arguments_parse(s),
                Some(_) => false,
            };
            named && args_ok
        }
        _ => false,
    }
}

fn has_call_keys(v: &Value) -> bool {
    match v {
        Value::Array(items) => items.first().is_some_and(has_call_keys),
        // Besides the keys of a real call, the ones models use when they get the format
        // wrong (`tool`/`args`, LangChain's `action_input`).
        Value::Object(o) => [
            "name",
            "arguments",
            "parameters",
            "function",
            "tool_calls",
            "tool",
            "tool_name",
            "args",
            "action_input",
        ]
        .iter()
        .any(|k| o.contains_key(*k)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openings() {
        assert_eq!(opening("  {\"name\"", false), Opening::Call);
        assert_eq!(opening("```json\n{", false), Opening::Call);
        assert_eq!(opening("```", false), Opening::Undecided);
        assert_eq!(opening("```python\nprint(1)", false), Opening::Text);
        assert_eq!(opening("<tool", false), Opening::Undecided);
        assert_eq!(opening("<tool_call>{", false), Opening::Call);
        assert_eq!(opening("[1] says so", false), Opening::Text);
        assert_eq!(opening("Sure, here", false), Opening::Text);
        assert_eq!(opening("[", true), Opening::Text);
    }

    #[test]
    fn valid_calls_and_plain_json_pass() {
        let call = r#"{"name": "get_weather", "arguments": {"city": "Berlin"}}"#;
        assert_eq!(judge(call), Judgement::Call);
        assert_eq!(judge(&format!("```json\n{call}\n```")), Judgement::Call);
        assert_eq!(
            judge(r#"{"function": {"name": "f", "arguments": "{\"a\": 1}"}}"#),
            Judgement::Call
        );
        assert_eq!(
            judge(r#"{"city": "Berlin", "temp": 21}"#),
            Judgement::NotACall
        );
        assert_eq!(judge(&format!("I will check. {call}")), Judgement::Call);
        assert_eq!(
            judge(&format!("{call} Let me know if that works.")),
            Judgement::Call
        );
    }

    #[test]
    fn broken_calls_are_found() {
        assert_eq!(
            judge(r#"{"name": "get_weather", "arguments": {"city": "Berlin"}"#),
            Judgement::Broken
        );
        assert_eq!(
            judge(r#"{"arguments": {"city": "Berlin"}}"#),
            Judgement::Broken
        );
        assert_eq!(judge("{name: get_weather}"), Judgement::Broken);
        // A second call that breaks off.
        assert_eq!(
            judge("{\"name\": \"a\", \"arguments\": {}}\n{\"name\": \"b\", \"arg"),
            Judgement::Broken
        );
    }

    #[test]
    fn repair_closes_braces_and_drops_trailing_commas() {
        let parsed = |s: Option<String>| s.map(|s| serde_json::from_str::<Value>(&s).unwrap());
        assert_eq!(
            parsed(repair(
                "```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Ber"
            )),
            Some(serde_json::json!({"name": "get_weather", "arguments": {"city": "Ber"}}))
        );
        assert_eq!(
            parsed(repair(r#"{"name": "f", "arguments": {"a": [1, 2,],},}"#)),
            Some(serde_json::json!({"name": "f", "arguments": {"a": [1, 2]}}))
        );
        assert_eq!(
            parsed(repair(
                r#"<tool_call>{"name": "f", "arguments": {}}}}</tool_call>"#
            )),
            Some(serde_json::json!({"name": "f", "arguments": {}}))
        );
        assert_eq!(
            parsed(repair(
                "{\"name\": \"a\", \"arguments\": {}}\n{\"name\": \"b\", \"arguments\": {"
            )),
            Some(
                serde_json::json!([{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}])
            )
        );
        assert_eq!(
            parsed(repair(
                r#"{"name": "f", "arguments": {"room": "living room}}"#
            )),
            Some(serde_json::json!({"name": "f", "arguments": {"room": "living room"}}))
        );
        assert!(repair(r#"{"arguments": {"a": 1}"#).is_none());
        assert!(repair("{name: f}").is_none());
    }
}
