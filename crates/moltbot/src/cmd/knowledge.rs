//! `moltbot knowledge add|search|list|remove`.
//!
//! When a gateway is running it owns the store (its index files are open for writing), so
//! these commands go through its API: files are read and converted to text here and sent to
//! `/api/v1/knowledge/ingest`. With no gateway running they open the store directly.

use super::client::GatewayClient;
use crate::cli::{GatewayClientArgs, KnowledgeCommand};
use crate::understanding::{configured_encoder, open_knowledge};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use moltbot_core::Config;
use moltbot_knowledge::{collect_files, extract_file, Knowledge, SearchMode, SearchOptions};
use serde_json::{json, Value};
use std::path::Path;
use std::process::ExitCode;

pub fn run(config_path: Option<&Path>, command: KnowledgeCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config_path)?;
    let gateway_args = match &command {
        KnowledgeCommand::Add { gateway, .. }
        | KnowledgeCommand::Search { gateway, .. }
        | KnowledgeCommand::List { gateway, .. }
        | KnowledgeCommand::Remove { gateway, .. } => gateway.clone(),
    };
    let target = Target::pick(&cfg, gateway_args)?;
    match command {
        KnowledgeCommand::Add { paths, .. } => add(&target, &paths),
        KnowledgeCommand::Search {
            query,
            k,
            mode,
            source,
            json,
            ..
        } => search(&target, &query, k, &mode, source, json),
        KnowledgeCommand::List { json, .. } => list(&target, json),
        KnowledgeCommand::Remove { source, .. } => remove(&target, &source),
    }
}

/// Where the store is reached.
enum Target {
    Gateway(GatewayClient, tokio::runtime::Runtime),
    Local(Box<Knowledge>),
}

impl Target {
    fn pick(cfg: &Config, args: GatewayClientArgs) -> anyhow::Result<Self> {
        let explicit = args.url.is_some();
        let client = GatewayClient::new(cfg, args)?;
        let rt = super::small_runtime()?;
        let up = rt.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(2),
                client.call("/healthz", None),
            )
            .await
            .is_ok_and(|r| r.is_ok())
        });
        if up {
            return Ok(Target::Gateway(client, rt));
        }
        anyhow::ensure!(!explicit, "cannot reach the gateway at the given --url");
        let data_dir = cfg.data.resolved_dir();
        let encoder = configured_encoder(&cfg.understanding, &data_dir, true)?;
        Ok(Target::Local(Box::new(open_knowledge(
            &cfg.knowledge,
            encoder,
            &data_dir,
        )?)))
    }

    fn call(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        match self {
            Target::Gateway(client, rt) => rt.block_on(client.call(path, body)),
            Target::Local(_) => unreachable!("only called for the gateway target"),
        }
    }
}

fn bar(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:40!} [{bar:30}] {pos}/{len} files eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn add(target: &Target, paths: &[std::path::PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = 0usize;
    let (mut added, mut updated, mut unchanged, mut chunks) = (0usize, 0usize, 0usize, 0usize);
    for path in paths {
        match target {
            Target::Local(kb) => {
                let files = collect_files(path)?;
                let progress = bar(files.len());
                let report = kb.add_path(path, &mut |p| {
                    progress.set_position(p.done as u64);
                    progress.set_message(p.path.display().to_string());
                    if let Err(e) = &p.outcome {
                        progress.println(format!("skipped {}: {e}", p.path.display()));
                    }
                })?;
                progress.finish_and_clear();
                added += report.added.len();
                updated += report.updated.len();
                unchanged += report.unchanged.len();
                failed += report.failed.len();
                chunks += report.chunks;
            }
            Target::Gateway(..) => {
                let files = collect_files(path)?;
                let progress = bar(files.len());
                for file in files {
                    progress.set_message(file.display().to_string());
                    let source = std::fs::canonicalize(&file).unwrap_or(file.clone());
                    let outcome =
                        extract_file(&file)
                            .map_err(anyhow::Error::from)
                            .and_then(|(_, text)| {
                                target.call(
                                "/api/v1/knowledge/ingest",
                                Some(
                                    json!({ "source": source.display().to_string(), "text": text }),
                                ),
                            )
                            });
                    match outcome {
                        Ok(v) => {
                            chunks += v["chunks"].as_u64().unwrap_or(0) as usize;
                            // `AddStatus` serialises as its variant name.
                            match v["status"].as_str() {
                                Some("Added") => added += 1,
                                Some("Updated") => updated += 1,
                                _ => unchanged += 1,
                            }
                        }
                        Err(e) => {
                            failed += 1;
                            progress.println(format!("skipped {}: {e:#}", file.display()));
                        }
                    }
                    progress.inc(1);
                }
                progress.finish_and_clear();
            }
        }
    }
    outln!(
        "added {added}, updated {updated}, unchanged {unchanged}, failed {failed}; {chunks} passages written"
    );
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn search(
    target: &Target,
    query: &str,
    k: usize,
    mode: &str,
    sources: Vec<String>,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let hits: Value = match target {
        Target::Gateway(..) => {
            let mut body = json!({ "query": query, "k": k, "mode": mode });
            if !sources.is_empty() {
                body["sources"] = json!(sources);
            }
            target.call("/api/v1/knowledge/search", Some(body))?["hits"].take()
        }
        Target::Local(kb) => {
            let mode = match mode {
                "hybrid" => SearchMode::Hybrid,
                "vector" => SearchMode::Vector,
                "keyword" => SearchMode::Keyword,
                other => anyhow::bail!("--mode must be hybrid, vector or keyword, got {other:?}"),
            };
            let opts = SearchOptions {
                sources: (!sources.is_empty()).then_some(sources),
                mode,
            };
            serde_json::to_value(kb.search(query, k, &opts)?)?
        }
    };
    if json_out {
        outln!("{}", json!({ "hits": hits }));
        return Ok(ExitCode::SUCCESS);
    }
    let list = hits.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        eprintln!("no passages match (add documents with `moltbot knowledge add PATH`)");
    }
    for (i, h) in list.iter().enumerate() {
        let text = h["text"].as_str().unwrap_or("");
        let snippet: String = text.chars().take(240).collect();
        outln!(
            "{}. {} [{}..{}] {}  (chunk {}, score {:.4})\n   {}{}",
            i + 1,
            h["source"].as_str().unwrap_or(""),
            h["start"],
            h["end"],
            h["heading"].as_str().unwrap_or(""),
            h["chunk_id"],
            h["score"].as_f64().unwrap_or(0.0),
            snippet.replace('\n', " "),
            if snippet.len() < text.len() {
                "…"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn list(target: &Target, json_out: bool) -> anyhow::Result<ExitCode> {
    let sources: Value = match target {
        Target::Gateway(..) => target.call("/api/v1/knowledge", None)?["sources"].take(),
        Target::Local(kb) => serde_json::to_value(kb.list()?)?,
    };
    if json_out {
        outln!("{sources}");
        return Ok(ExitCode::SUCCESS);
    }
    for s in sources.as_array().cloned().unwrap_or_default() {
        outln!(
            "{:>6} passages {:>10} bytes  {}",
            s["chunks"],
            s["bytes"],
            s["source"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(target: &Target, source: &str) -> anyhow::Result<ExitCode> {
    let removed = match target {
        Target::Gateway(..) => target.call(
            "/api/v1/knowledge/remove",
            Some(json!({ "source": source })),
        )?["removed_chunks"]
            .as_u64()
            .unwrap_or(0) as usize,
        Target::Local(kb) => kb.remove_source(source).context("removing the source")?,
    };
    anyhow::ensure!(removed > 0, "{source:?} is not in the knowledge store");
    outln!("removed {source} ({removed} passages)");
    Ok(ExitCode::SUCCESS)
}
