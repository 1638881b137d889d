//! Checks that keep the deployment files under `deploy/` (and the compose file and
//! Dockerfile at the root) working. No Helm binary exists on the build machines, so the chart
//! is rendered here by a small renderer of the Go-template subset the chart uses.
//!
//! # Layout
//! - [`Chart`]: a chart folder read from disk (`Chart.yaml`, `values.yaml`, `templates/`),
//!   with [`Chart::render`] giving each template's output for a release name and values.
//! - [`render`]: one template string against a [`Scope`]; the supported actions are listed
//!   on it. Anything else is an error naming the action, so the chart cannot silently grow
//!   past what the tests can check.
//! - [`merge`]: overlay values the way `helm --set`/`-f` does (maps merge, the rest replaces).
//!
//! The tests in `tests/it/` render the chart, validate the Kubernetes shapes with
//! `k8s-openapi`, parse `docker-compose.prod.yml`, and check that the Grafana dashboard and
//! the Prometheus alerts only name metrics a real gateway exports.

use serde_yaml_ng::Value;
use std::fmt;
use std::path::{Path, PathBuf};

/// A template or chart that cannot be rendered, with where and why.
#[derive(Debug)]
pub struct TemplateError(String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

fn err<T>(msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(msg.into()))
}

/// What `.Values`, `.Release` and `.Chart` resolve to.
#[derive(Debug, Clone)]
pub struct Scope {
    pub values: Value,
    pub release_name: String,
    /// `Chart.yaml` as read; `.Chart.Name` is looked up as `name`, `.Chart.AppVersion` as
    /// `appVersion` (Helm's capitalised field names mapped to the file's keys).
    pub chart: Value,
}

/// A chart folder: `Chart.yaml`, `values.yaml` and `templates/*.yaml`.
#[derive(Debug)]
pub struct Chart {
    pub dir: PathBuf,
    pub meta: Value,
    pub values: Value,
    /// (file name, template text), sorted by name; `_*.tpl` partials are not supported.
    pub templates: Vec<(String, String)>,
}

impl Chart {
    pub fn load(dir: &Path) -> Result<Chart, TemplateError> {
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p)
                .map_err(|e| TemplateError(format!("cannot read {}: {e}", p.display())))
        };
        let yaml = |p: PathBuf| -> Result<Value, TemplateError> {
            let text = read(p.clone())?;
            serde_yaml_ng::from_str(&text)
                .map_err(|e| TemplateError(format!("{} is not YAML: {e}", p.display())))
        };
        let meta = yaml(dir.join("Chart.yaml"))?;
        let values = yaml(dir.join("values.yaml"))?;
        let tdir = dir.join("templates");
        let entries = std::fs::read_dir(&tdir)
            .map_err(|e| TemplateError(format!("cannot list {}: {e}", tdir.display())))?;
        let mut templates = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| TemplateError(format!("cannot list {}: {e}", tdir.display())))?
                .path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".yaml") || name.ends_with(".yml") {
                templates.push((name, read(path)?));
            } else if !name.ends_with(".txt") {
                return err(format!(
                    "{}: only .yaml templates (and NOTES.txt) are supported, found {name}",
                    tdir.display()
                ));
            }
        }
        templates.sort();
        Ok(Chart {
            dir: dir.to_path_buf(),
            meta,
            values,
            templates,
        })
    }

    /// Render every template with `overrides` merged over `values.yaml`; returns
    /// (file name, output) pairs.
    pub fn render(
        &self,
        release_name: &str,
        overrides: &Value,
    ) -> Result<Vec<(String, String)>, TemplateError> {
        let mut values = self.values.clone();
        merge(&mut values, overrides);
        let scope = Scope {
            values,
            release_name: release_name.to_owned(),
            chart: self.meta.clone(),
        };
        self.templates
            .iter()
            .map(|(name, text)| {
                render(text, &scope)
                    .map(|out| (name.clone(), out))
                    .map_err(|e| TemplateError(format!("templates/{name}: {e}")))
            })
            .collect()
    }
}

/// Overlay `over` onto `base`: maps merge key by key, anything else replaces.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// A piece of a template after splitting on `{{ … }}`.
enum Piece<'a> {
    Text(String),
    Action(&'a str),
}

/// Split into text and actions, applying `{{-` / `-}}` whitespace trimming as Go does.
fn lex(src: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut text = rest[..open].to_owned();
        if trim_next {
            text = text.trim_start().to_owned();
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return err(format!("unclosed `{{{{` near {:?}", snippet(after)));
        };
        let mut body = &after[..close];
        if let Some(b) = body.strip_prefix('-') {
            text = text.trim_end().to_owned();
            body = b;
        }
        trim_next = false;
        if let Some(b) = body.strip_suffix('-') {
            trim_next = true;
            body = b;
        }
        pieces.push(Piece::Text(text));
        pieces.push(Piece::Action(body.trim()));
        rest = &after[close + 2..];
    }
    let tail = if trim_next { rest.trim_start() } else { rest };
    pieces.push(Piece::Text(tail.to_owned()));
    Ok(pieces)
}

fn snippet(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A template after parsing: text, printed pipelines and `if` blocks.
enum Node<'a> {
    Text(String),
    Print(&'a str),
    If {
        cond: &'a str,
        then: Vec<Node<'a>>,
        otherwise: Vec<Node<'a>>,
    },
}

/// Parse pieces until `end`/`else` (returned as the terminator) or the end of input.
fn parse<'a>(
    pieces: &mut std::iter::Peekable<std::vec::IntoIter<Piece<'a>>>,
) -> Result<(Vec<Node<'a>>, Option<&'a str>), TemplateError> {
    let mut nodes = Vec::new();
    while let Some(piece) = pieces.next() {
        match piece {
            Piece::Text(t) => nodes.push(Node::Text(t)),
            Piece::Action(a) if a.starts_with("/*") => {} // a comment
            Piece::Action(a) if a == "end" || a == "else" => return Ok((nodes, Some(a))),
            Piece::Action(a) => {
                if let Some(cond) = a.strip_prefix("if ") {
                    let (then, term) = parse(pieces)?;
                    let otherwise = match term {
                        Some("else") => match parse(pieces)? {
                            (nodes, Some("end")) => nodes,
                            _ => return err(format!("`if {cond}`: `else` without `end`")),
                        },
                        Some(_) => Vec::new(),
                        None => return err(format!("`if {cond}` without `end`")),
                    };
                    nodes.push(Node::If {
                        cond: cond.trim(),
                        then,
                        otherwise,
                    });
                } else {
                    nodes.push(Node::Print(a));
                }
            }
        }
    }
    Ok((nodes, None))
}

/// Render one template. Supported, and nothing else:
/// - text, `{{/* comments */}}`, and `{{-` / `-}}` whitespace trimming;
/// - `{{ if PIPELINE }} … {{ else }} … {{ end }}` (nested), with Go's truthiness;
/// - pipelines `A | f | g` where `A` is `.Values.a.b`, `.Release.Name`, `.Chart.Name`,
///   `.Chart.Version`, `.Chart.AppVersion`, a "string" or an integer, and the functions are
///   `toYaml X`, `nindent N`, `indent N`, `quote`, `default X`, `not X`.
///
/// A missing `.Values` key is an error (Helm would print nothing), so a typo in the chart
/// fails the tests instead of rendering an empty field.
pub fn render(src: &str, scope: &Scope) -> Result<String, TemplateError> {
    let mut pieces = lex(src)?.into_iter().peekable();
    let (nodes, term) = parse(&mut pieces)?;
    if let Some(t) = term {
        return err(format!("`{t}` without `if`"));
    }
    let mut out = String::new();
    emit(&nodes, scope, &mut out)?;
    Ok(out)
}

fn emit(nodes: &[Node<'_>], scope: &Scope, out: &mut String) -> Result<(), TemplateError> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Print(p) => out.push_str(&to_text(&pipeline(p, scope)?, p)?),
            Node::If {
                cond,
                then,
                otherwise,
            } => {
                let branch = if truthy(&pipeline(cond, scope)?) {
                    then
                } else {
                    otherwise
                };
                emit(branch, scope, out)?;
            }
        }
    }
    Ok(())
}

/// Go's truthiness: false, 0, "", null and empty collections are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Sequence(s) => !s.is_empty(),
        Value::Mapping(m) => !m.is_empty(),
        Value::Tagged(t) => truthy(&t.value),
    }
}

fn to_text(v: &Value, action: &str) -> Result<String, TemplateError> {
    Ok(match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => {
            return err(format!(
                "`{{{{ {action} }}}}` prints a map or list; use `toYaml … | nindent N`"
            ))
        }
    })
}

/// Split a command into words, keeping "quoted strings" whole.
fn words(cmd: &str) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    let mut chars = cmd.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::from('"');
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => s.extend(chars.next()),
                    Some(c) => s.push(c),
                    None => return err(format!("unclosed string in `{cmd}`")),
                }
            }
            out.push(s);
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

/// One argument: a field reference, a "string" (kept with its leading quote by [`words`]) or
/// an integer.
fn operand(word: &str, scope: &Scope) -> Result<Value, TemplateError> {
    if let Some(s) = word.strip_prefix('"') {
        return Ok(Value::String(s.to_owned()));
    }
    if let Ok(n) = word.parse::<i64>() {
        return Ok(Value::from(n));
    }
    if let Some(path) = word.strip_prefix(".Values") {
        let mut v = &scope.values;
        for key in path.split('.').filter(|k| !k.is_empty()) {
            v = match v.get(key) {
                Some(next) => next,
                None => return err(format!("`{word}`: no key `{key}` in the values")),
            };
        }
        return Ok(v.clone());
    }
    let chart_key = match word {
        ".Release.Name" => return Ok(Value::String(scope.release_name.clone())),
        ".Chart.Name" => "name",
        ".Chart.Version" => "version",
        ".Chart.AppVersion" => "appVersion",
        _ => return err(format!("unsupported operand `{word}`")),
    };
    match scope.chart.get(chart_key) {
        Some(v) => Ok(v.clone()),
        None => err(format!("`{word}`: Chart.yaml has no `{chart_key}`")),
    }
}

fn pipeline(src: &str, scope: &Scope) -> Result<Value, TemplateError> {
    let mut acc: Option<Value> = None;
    for cmd in src.split('|') {
        let w = words(cmd)?;
        let Some(head) = w.first() else {
            return err(format!("empty command in `{src}`"));
        };
        // Arguments given in the command, then the piped value as the last one (Go's rule).
        let mut args = w[1..]
            .iter()
            .map(|a| operand(a, scope))
            .collect::<Result<Vec<_>, _>>()?;
        args.extend(acc.take());
        let arity = |n: usize| -> Result<(), TemplateError> {
            if args.len() == n {
                Ok(())
            } else {
                err(format!(
                    "`{head}` takes {n} argument(s), got {} in `{src}`",
                    args.len()
                ))
            }
        };
        let int_arg = |v: &Value| -> Result<usize, TemplateError> {
            v.as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| TemplateError(format!("`{head}` needs a number in `{src}`")))
        };
        acc = Some(match head.as_str() {
            "toYaml" => {
                arity(1)?;
                let text = serde_yaml_ng::to_string(&args[0])
                    .map_err(|e| TemplateError(format!("toYaml in `{src}`: {e}")))?;
                Value::String(text.trim_end().to_owned())
            }
            "nindent" | "indent" => {
                arity(2)?;
                let pad = " ".repeat(int_arg(&args[0])?);
                let body = to_text(&args[1], src)?;
                let indented: Vec<String> = body.lines().map(|l| format!("{pad}{l}")).collect();
                let lead = if head == "nindent" { "\n" } else { "" };
                Value::String(format!("{lead}{}", indented.join("\n")))
            }
            "quote" => {
                arity(1)?;
                let s = to_text(&args[0], src)?;
                // JSON string escaping is a subset of what YAML double quotes accept.
                Value::String(serde_json_escape(&s))
            }
            "default" => {
                arity(2)?;
                if truthy(&args[1]) {
                    args.swap_remove(1)
                } else {
                    args.swap_remove(0)
                }
            }
            "not" => {
                arity(1)?;
                Value::Bool(!truthy(&args[0]))
            }
            _ if args.is_empty() && w.len() == 1 => operand(head, scope)?,
            other => return err(format!("unsupported function `{other}` in `{src}`")),
        });
    }
    acc.ok_or_else(|| TemplateError(format!("empty pipeline `{src}`")))
}

fn serde_json_escape(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(values: &str) -> Scope {
        Scope {
            values: serde_yaml_ng::from_str(values).unwrap(),
            release_name: "rel".into(),
            chart: serde_yaml_ng::from_str("name: c\nversion: 1.0.0\nappVersion: \"0.1.0\"")
                .unwrap(),
        }
    }

    #[test]
    fn values_release_chart_and_functions() {
        let s = scope("a: {b: 3, name: x, empty: \"\"}\nres: {cpu: 1, memory: 2Gi}");
        let out = render(
            "{{ .Release.Name }}-{{ .Chart.Name }} {{ .Values.a.b }} {{ .Values.a.name | quote }} \
             {{ .Values.a.empty | default .Chart.AppVersion }}",
            &s,
        )
        .unwrap();
        assert_eq!(out, "rel-c 3 \"x\" 0.1.0");
        let out = render("r:\n  {{- toYaml .Values.res | nindent 2 }}\n", &s).unwrap();
        assert_eq!(out, "r:\n  cpu: 1\n  memory: 2Gi\n");
    }

    #[test]
    fn if_else_nesting_and_trimming() {
        let s = scope("on: true\noff: false\nn: 0");
        let t = "a\n{{- if .Values.on }}\nb\n{{- if .Values.off }}\nX\n{{- else }}\nc\n{{- end }}\n{{- end }}\n{{- if not .Values.n }}\nd\n{{- end }}\n";
        assert_eq!(render(t, &s).unwrap(), "a\nb\nc\nd\n");
    }

    #[test]
    fn unknown_keys_and_functions_are_errors() {
        let s = scope("a: 1");
        let e = render("{{ .Values.b.c }}", &s).unwrap_err().to_string();
        assert!(e.contains("no key `b`"), "{e}");
        let e = render("{{ include \"x\" . }}", &s).unwrap_err().to_string();
        assert!(e.contains("unsupported"), "{e}");
        assert!(render("{{ if .Values.a }}x", &s).is_err());
        assert!(render("x{{ end }}", &s).is_err());
        assert!(render("{{ .Values }}", &s).is_err());
    }

    #[test]
    fn merge_overlays_maps() {
        let mut base: Value = serde_yaml_ng::from_str("a: {b: 1, c: 2}\nl: [1]").unwrap();
        let over: Value = serde_yaml_ng::from_str("a: {c: 3}\nl: [2]").unwrap();
        merge(&mut base, &over);
        assert_eq!(
            base,
            serde_yaml_ng::from_str::<Value>("a: {b: 1, c: 3}\nl: [2]").unwrap()
        );
    }
}
