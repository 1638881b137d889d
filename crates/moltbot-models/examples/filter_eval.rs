//! Measure the response filter on a labelled set of replies.
//!
//! ```sh
//! cargo run -p moltbot-models --example filter_eval -- bench/filter/replies.jsonl [--json] [--config FILE] [--show]
//! ```
//!
//! Each line of the set is `{"system": "...", "tools": bool, "reply": "...", "label":
//! "good"|"bad", "issue": "none|empty|loop|leak|tool_json|unsafe"}`. The filter's settings
//! (the keys of `[model.filter]`) come from `--config`, else from `filter.toml` next to the
//! set if there is one, else the defaults. Prints precision, recall and F1 for "bad" overall
//! and per issue, the confusion counts and every misclassified line; `--json` prints the
//! same as one JSON object; `--show` also prints what the filter delivers for every reply it
//! did not pass. Every reply is also streamed through the guard in small pieces,
//! and any line where the stream and the whole-reply check disagree is listed.
//!
//! Exit codes: 0 measured, 2 bad arguments or an unreadable set.

use anyhow::{bail, Context};
use moltbot_core::config::FilterConfig;
use moltbot_models::filter::{Action, FilterContext, Issue, Outcome, ResponseFilter};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    system: String,
    tools: bool,
    reply: String,
    label: String,
    issue: String,
}

/// Rows and columns of the confusion table: `none` first, then each issue.
const CLASSES: [&str; 6] = ["none", "empty", "loop", "leak", "tool_json", "unsafe"];

struct Args {
    set: PathBuf,
    json: bool,
    show: bool,
    config: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut set = None;
    let mut json = false;
    let mut show = false;
    let mut config = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = true,
            "--show" => show = true,
            "--config" => {
                config = Some(PathBuf::from(args.next().context("--config needs a file")?))
            }
            _ if a.starts_with("--") => bail!("unknown flag {a}"),
            _ if set.is_none() => set = Some(PathBuf::from(a)),
            _ => bail!("one set at a time, got a second: {a}"),
        }
    }
    let Some(set) = set else {
        bail!("usage: filter_eval SET.jsonl [--json] [--config FILE] [--show]");
    };
    Ok(Args {
        set,
        json,
        show,
        config,
    })
}

fn load_config(args: &Args) -> anyhow::Result<(FilterConfig, Option<PathBuf>)> {
    let path = args.config.clone().or_else(|| {
        let beside = args
            .set
            .parent()
            .unwrap_or(Path::new("."))
            .join("filter.toml");
        beside.is_file().then_some(beside)
    });
    let Some(path) = path else {
        return Ok((FilterConfig::default(), None));
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: FilterConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok((cfg, Some(path)))
}

struct Judged {
    line_no: usize,
    gold: &'static str,
    predicted: Outcome,
    streamed: Outcome,
    stream_text_ok: bool,
    reply: String,
    delivered: String,
}

fn class_of(issue: Option<Issue>) -> &'static str {
    issue.map_or("none", Issue::as_str)
}

/// Stream a reply through a guard in pieces of `size` characters.
fn stream(
    filter: &ResponseFilter,
    ctx: &FilterContext,
    reply: &str,
    size: usize,
) -> (String, Outcome) {
    let mut guard = filter.guard(ctx);
    let mut out = String::new();
    let chars: Vec<char> = reply.chars().collect();
    for piece in chars.chunks(size) {
        let step = guard.push(&piece.iter().collect::<String>());
        out.push_str(&step.emit);
        if step.stop {
            break;
        }
    }
    let end = guard.finish();
    out.push_str(&end.emit);
    (out, end.outcome)
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn prf(tp: usize, fp: usize, fn_: usize) -> (f64, f64, f64) {
    let p = ratio(tp, tp + fp);
    let r = ratio(tp, tp + fn_);
    let f = if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    };
    (p, r, f)
}

fn excerpt(s: &str) -> String {
    let one_line: String = s.chars().map(|c| if c == '\n' { '⏎' } else { c }).collect();
    let mut out: String = one_line.chars().take(90).collect();
    if one_line.chars().count() > 90 {
        out.push('…');
    }
    out
}

fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    let (cfg, cfg_path) = load_config(&args)?;
    let filter = ResponseFilter::new(&cfg)?;
    let text = std::fs::read_to_string(&args.set)
        .with_context(|| format!("reading {}", args.set.display()))?;

    let started = Instant::now();
    let mut judged = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(raw).with_context(|| format!("line {line_no}"))?;
        let Some(gold) = CLASSES.iter().copied().find(|c| *c == line.issue) else {
            bail!("line {line_no}: unknown issue {:?}", line.issue);
        };
        match (line.label.as_str(), gold) {
            ("good", "none") => {}
            ("bad", g) if g != "none" => {}
            (label, issue) => bail!("line {line_no}: label {label:?} does not fit issue {issue:?}"),
        }
        let ctx = FilterContext::new(line.system, line.tools);
        let verdict = filter.check(&line.reply, &ctx);
        let (streamed_text, streamed) = stream(&filter, &ctx, &line.reply, line_no % 7 + 1);
        let stream_text_ok = match verdict.outcome.action {
            // A streamed rejection keeps what was already sent; only the rest is comparable.
            Action::Rejected => streamed_text.ends_with(filter.fallback()),
            Action::Pass | Action::Repaired | Action::Flagged => streamed_text == verdict.text,
        };
        judged.push(Judged {
            line_no,
            gold,
            predicted: verdict.outcome,
            streamed,
            stream_text_ok,
            reply: line.reply,
            delivered: verdict.text,
        });
    }
    let elapsed = started.elapsed();

    // Overall: is the reply bad at all?
    let (mut tp, mut fp, mut fn_, mut tn) = (0, 0, 0, 0);
    for j in &judged {
        match (j.gold != "none", j.predicted.action != Action::Pass) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => tn += 1,
        }
    }
    let overall = prf(tp, fp, fn_);

    let mut per_issue = Vec::new();
    for issue in Issue::ALL {
        let name = issue.as_str();
        let tp = judged
            .iter()
            .filter(|j| j.gold == name && class_of(j.predicted.issue) == name)
            .count();
        let fp = judged
            .iter()
            .filter(|j| j.gold != name && class_of(j.predicted.issue) == name)
            .count();
        let fn_ = judged
            .iter()
            .filter(|j| j.gold == name && class_of(j.predicted.issue) != name)
            .count();
        let support = judged.iter().filter(|j| j.gold == name).count();
        per_issue.push((name, support, tp, fp, fn_, prf(tp, fp, fn_)));
    }

    let mut confusion: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for j in &judged {
        *confusion
            .entry((j.gold, class_of(j.predicted.issue)))
            .or_default() += 1;
    }
    let wrong: Vec<&Judged> = judged
        .iter()
        .filter(|j| j.gold != class_of(j.predicted.issue))
        .collect();
    let disagree: Vec<&Judged> = judged
        .iter()
        .filter(|j| j.streamed != j.predicted || !j.stream_text_ok)
        .collect();

    if args.json {
        let out = json!({
            "set": args.set.display().to_string(),
            "config": cfg_path.as_ref().map(|p| p.display().to_string()),
            "lines": judged.len(),
            "bad": {"tp": tp, "fp": fp, "fn": fn_, "tn": tn,
                    "precision": overall.0, "recall": overall.1, "f1": overall.2},
            "per_issue": per_issue.iter().map(|(name, support, tp, fp, fn_, (p, r, f))| json!({
                "issue": name, "support": support, "tp": tp, "fp": fp, "fn": fn_,
                "precision": p, "recall": r, "f1": f,
            })).collect::<Vec<_>>(),
            "confusion": CLASSES.iter().map(|g| json!({
                "gold": g,
                "predicted": CLASSES.iter().map(|p| (p.to_string(), json!(confusion.get(&(*g, *p)).copied().unwrap_or(0)))).collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
            "misclassified": wrong.iter().map(|j| json!({
                "line": j.line_no, "gold": j.gold,
                "verdict": j.predicted.action.as_str(), "issue": j.predicted.issue_label(),
                "reply": excerpt(&j.reply),
            })).collect::<Vec<_>>(),
            "stream_disagreements": disagree.iter().map(|j| j.line_no).collect::<Vec<_>>(),
            "micros_per_reply": elapsed.as_secs_f64() * 1e6 / judged.len().max(1) as f64,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }

    println!("set: {} ({} lines)", args.set.display(), judged.len());
    match &cfg_path {
        Some(p) => println!("filter settings: {}", p.display()),
        None => println!("filter settings: defaults"),
    }
    println!();
    println!("bad replies overall: tp {tp}  fp {fp}  fn {fn_}  tn {tn}");
    println!(
        "  precision {:.3}  recall {:.3}  F1 {:.3}",
        overall.0, overall.1, overall.2
    );
    println!();
    println!(
        "{:<10} {:>7} {:>4} {:>4} {:>4} {:>9} {:>7} {:>6}",
        "issue", "support", "tp", "fp", "fn", "precision", "recall", "F1"
    );
    for (name, support, tp, fp, fn_, (p, r, f)) in &per_issue {
        println!("{name:<10} {support:>7} {tp:>4} {fp:>4} {fn_:>4} {p:>9.3} {r:>7.3} {f:>6.3}");
    }
    println!();
    println!("confusion (rows: label, columns: filter)");
    print!("{:<10}", "");
    for c in CLASSES {
        print!(" {c:>9}");
    }
    println!();
    for g in CLASSES {
        print!("{g:<10}");
        for p in CLASSES {
            print!(" {:>9}", confusion.get(&(g, p)).copied().unwrap_or(0));
        }
        println!();
    }
    println!();
    println!("misclassified: {}", wrong.len());
    for j in &wrong {
        println!(
            "  line {:>4}  label {:<9} filter {}/{:<9}  {}",
            j.line_no,
            j.gold,
            j.predicted.action.as_str(),
            j.predicted.issue_label(),
            excerpt(&j.reply)
        );
    }
    if args.show {
        println!();
        println!("delivered instead (every reply not passed as it was):");
        for j in judged.iter().filter(|j| j.predicted.action != Action::Pass) {
            println!(
                "  line {:>4}  {}/{}\n    reply:     {}\n    delivered: {}",
                j.line_no,
                j.predicted.action.as_str(),
                j.predicted.issue_label(),
                excerpt(&j.reply),
                excerpt(&j.delivered)
            );
        }
    }
    println!();
    println!("stream vs whole-reply disagreements: {}", disagree.len());
    for j in &disagree {
        println!(
            "  line {:>4}  whole {}/{}  stream {}/{}  text {}",
            j.line_no,
            j.predicted.action.as_str(),
            j.predicted.issue_label(),
            j.streamed.action.as_str(),
            j.streamed.issue_label(),
            if j.stream_text_ok { "same" } else { "differs" }
        );
    }
    println!();
    println!(
        "{:.1} µs per reply (check + streamed check)",
        elapsed.as_secs_f64() * 1e6 / judged.len().max(1) as f64
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("filter_eval: {e:#}");
            ExitCode::from(2)
        }
    }
}
