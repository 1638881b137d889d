//! A llama.cpp grammar (GBNF) for a tool's arguments, from its JSON schema, so the local
//! model can only write a JSON object of the right shape: required fields in order, then
//! the optional ones it chooses (each at most once, in a fixed order), enums as their
//! values, strings, numbers and booleans as JSON. Anything the subset does not cover
//! (nested objects, arrays, unions) accepts any JSON value.
//!
//! Written here rather than taken from llama.cpp's `json_schema_to_grammar` because that
//! lives in its `common` library, which llama-cpp-2 builds only with a feature that adds a
//! second C++ build step for this one function; the schemas of our tools are small.

use serde_json::Value;

/// The grammar (root rule `root`) of an arguments object for `schema`.
pub(super) fn arguments_grammar(
    schema: &Value,
    fixed: &serde_json::Map<String, Value>,
    only: Option<&[String]>,
) -> String {
    let props = schema["properties"].as_object();
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // With `only`, the object holds the fixed fields and exactly those (written in that
    // order); everything else is left out.
    let narrowed;
    let props = if let Some(only) = only {
        let mut keep = serde_json::Map::new();
        for (k, v) in props.into_iter().flatten() {
            if fixed.contains_key(k) || only.contains(k) {
                keep.insert(k.clone(), v.clone());
            }
        }
        required = fixed
            .keys()
            .map(String::as_str)
            .chain(only.iter().map(String::as_str))
            .filter(|k| keep.contains_key(*k))
            .collect();
        narrowed = keep;
        Some(&narrowed)
    } else {
        props
    };
    let mut fields: Vec<&str> = required
        .iter()
        .copied()
        .filter(|r| props.is_some_and(|p| p.contains_key(*r)))
        .collect();
    let n_required = fields.len();
    if let Some(p) = props {
        fields.extend(
            p.keys()
                .map(String::as_str)
                .filter(|k| !required.contains(k)),
        );
    }
    let mut rules = Vec::new();
    let mut parts = Vec::new();
    for (i, name) in fields.iter().enumerate() {
        let prop = props.map(|p| &p[*name]).unwrap_or(&Value::Null);
        let rule = match fixed.get(*name) {
            // Decided by the caller: written as it is.
            Some(v) => gbnf_literal(&v.to_string()),
            None => value_rule(prop),
        };
        rules.push(format!("f{i} ::= {rule}"));
        let key = gbnf_literal(&format!("\"{name}\": "));
        parts.push(match (i, i < n_required) {
            // The first required field opens the object.
            (0, true) => format!("{key} f{i}"),
            (_, true) => format!("\", \" {key} f{i}"),
            // Optional fields after the required ones, each at most once, in this order.
            (_, false) => format!("(\", \" {key} f{i})?"),
        });
    }
    let body = if fields.is_empty() {
        "\"{\" \"}\"".to_string()
    } else if n_required == 0 {
        // Without required fields: `{}` or one field (keeps the commas simple).
        let alts: Vec<String> = (0..fields.len())
            .map(|i| {
                format!(
                    "\"{{\" {} f{i} \"}}\"",
                    gbnf_literal(&format!("\"{}\": ", fields[i]))
                )
            })
            .collect();
        format!("\"{{}}\" | {}", alts.join(" | "))
    } else {
        format!("\"{{\" {} \"}}\"", parts.join(" "))
    };
    let mut out = format!("root ::= {body}\n");
    for r in rules {
        out.push_str(&r);
        out.push('\n');
    }
    out.push_str(COMMON);
    out
}

/// The grammar of one property's value.
fn value_rule(prop: &Value) -> String {
    if let Some(options) = prop["enum"].as_array() {
        let alts: Vec<String> = options
            .iter()
            .map(|o| gbnf_literal(&o.to_string()))
            .collect();
        if !alts.is_empty() {
            return format!("({})", alts.join(" | "));
        }
    }
    match prop["type"].as_str() {
        Some("string") => "string".into(),
        Some("integer") => "integer".into(),
        Some("number") => "number".into(),
        Some("boolean") => "boolean".into(),
        _ => "value".into(),
    }
}

/// A GBNF string literal for `text`.
fn gbnf_literal(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// JSON building blocks. Strings are limited to 200 characters so a model cannot loop
/// inside one until the token budget runs out.
const COMMON: &str = r#"string ::= "\"" char{0,200} "\""
char ::= [^"\\\x00-\x1f] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
integer ::= "-"? ([0-9] | [1-9] [0-9]{1,15})
number ::= integer ("." [0-9]{1,10})?
boolean ::= "true" | "false"
value ::= string | number | boolean | "null" | array | object
array ::= "[" (value (", " value){0,20})? "]"
object ::= "{" (string ": " value (", " string ": " value){0,20})? "}"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fixed_fields_are_literals() {
        let fixed = json!({"action": "recall"});
        let g = arguments_grammar(
            &json!({"type": "object", "properties": {
                "action": {"type": "string", "enum": ["remember", "recall"]},
                "query": {"type": "string"}}, "required": ["action"]}),
            fixed.as_object().unwrap(),
            None,
        );
        assert!(g.contains(r##"f0 ::= "\"recall\"""##), "{g}");
        // Only the named fields besides the fixed ones, all written.
        let g = arguments_grammar(
            &json!({"type": "object", "properties": {
                "action": {"type": "string"}, "query": {"type": "string"},
                "fact": {"type": "string"}}, "required": ["action"]}),
            fixed.as_object().unwrap(),
            Some(&["query".to_string()]),
        );
        assert!(
            g.starts_with(r#"root ::= "{" "\"action\": " f0 ", " "\"query\": " f1 "}""#),
            "{g}"
        );
        assert!(g.contains(r##"f0 ::= "\"recall\"""##), "{g}");
    }

    #[test]
    fn required_then_optional_fields() {
        let g = arguments_grammar(
            &json!({
                "type": "object",
                "properties": {
                    "action": {"type": "string", "enum": ["remember", "recall"]},
                    "fact": {"type": "string"},
                    "count": {"type": "integer"}
                },
                "required": ["action"]
            }),
            &serde_json::Map::new(),
            None,
        );
        let root = g.lines().next().unwrap();
        assert_eq!(
            root,
            r#"root ::= "{" "\"action\": " f0 (", " "\"count\": " f1)? (", " "\"fact\": " f2)? "}""#
        );
        assert!(
            g.contains(r#"f0 ::= ("\"remember\"" | "\"recall\"")"#),
            "{g}"
        );
        assert!(g.contains("f1 ::= integer"), "{g}");
        assert!(g.contains("f2 ::= string"), "{g}");
    }

    #[test]
    fn no_fields_or_only_optional_ones() {
        let none = serde_json::Map::new();
        let g = arguments_grammar(&json!({"type": "object"}), &none, None);
        assert!(g.starts_with("root ::= \"{\" \"}\""), "{g}");
        let g = arguments_grammar(
            &json!({"type": "object", "properties": {"q": {"type": "string"}}}),
            &none,
            None,
        );
        assert!(
            g.starts_with(r#"root ::= "{}" | "{" "\"q\": " f0 "}""#),
            "{g}"
        );
    }
}
