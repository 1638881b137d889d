//! `moltbot intents train|eval|predict`.

use crate::cli::IntentsCommand;
use crate::understanding::{load_encoder, model_path};
use anyhow::Context;
use moltbot_core::Encoder;
use moltbot_understand::{evaluate, Dataset, IntentModel};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

pub fn run(config_path: Option<&Path>, command: IntentsCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config_path)?;
    let data_dir = cfg.data.resolved_dir();
    let ucfg = &cfg.understanding;
    match command {
        IntentsCommand::Train {
            files,
            out,
            coarse_map,
            only_labels,
            with_builtin,
            encoder,
            precision,
            tune_layers,
            tune_epochs,
            reload,
            gateway,
            json,
        } => {
            let mut data = Dataset::load(&files, coarse_map.as_deref())?;
            if with_builtin {
                let builtin = Dataset::builtin()?;
                data.examples.extend(builtin.examples);
                for (k, v) in builtin.intents {
                    data.intents.entry(k).or_insert(v);
                }
            }
            if let Some(list) = only_labels {
                let text = std::fs::read_to_string(&list)
                    .with_context(|| format!("reading {}", list.display()))?;
                let keep: std::collections::HashSet<&str> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                data = data.filter(|label| keep.contains(label));
                anyhow::ensure!(
                    !data.examples.is_empty(),
                    "--only-labels {} kept no examples: none of its labels are in the data",
                    list.display()
                );
            }
            let encoder = load_encoder(
                encoder.unwrap_or(ucfg.encoder),
                precision.unwrap_or(ucfg.precision),
                ucfg.encoder_path.as_deref(),
                &data_dir,
                true,
            )?;
            let mut config = crate::understanding::model_config(ucfg);
            if let Some(layers) = tune_layers {
                config.tune.layers = usize::from(layers);
            }
            if let Some(epochs) = tune_epochs {
                config.tune.epochs = usize::from(epochs);
            }
            let tune_layers = config.tune.layers;
            let min_per_intent = config.tune.min_examples_per_intent;
            let (model, report) = IntentModel::train(&data, encoder.as_ref(), config)?;
            if tune_layers > 0 && report.tune.is_none() {
                eprintln!(
                    "note: --tune-layers {tune_layers} was not applied: fine-tuning needs the \
                     MiniLM encoder and at least {min_per_intent} examples per intent on \
                     average ({} examples for {} intents); the encoder stayed frozen",
                    report.examples, report.fine
                );
            }
            let out = out.unwrap_or_else(|| model_path(ucfg, &data_dir));
            model.save(&out)?;
            if json {
                let mut v = serde_json::to_value(&report)?;
                v["model"] = out.display().to_string().into();
                outln!("{v}");
            } else {
                outln!(
                    "trained {} intents in {} groups ({} learned) from {} examples, {} features; \
                     embedding {:.1}s, training {:.1}s\nsaved to {}",
                    report.fine,
                    report.coarse,
                    report.learned_groups,
                    report.examples,
                    report.features,
                    report.embed_secs,
                    report.train_secs,
                    out.display()
                );
                if let Some(t) = &report.tune {
                    outln!(
                        "fine-tuned the encoder's last {} layers: {} epochs, loss {:.3} → {:.3}, \
                         {:.1}s (part of the embedding time)",
                        t.layers,
                        t.epochs,
                        t.first_epoch_loss,
                        t.last_epoch_loss,
                        t.secs
                    );
                }
                if let Some(threshold) = report.sparse_exit_threshold {
                    outln!(
                        "sparse exit: turns the char + word heads give {threshold:.3} or more \
                         are answered without the encoder"
                    );
                }
            }
            if reload {
                let client = super::client::GatewayClient::new(&cfg, gateway)?;
                let rt = super::small_runtime()?;
                let answer = rt.block_on(client.call(
                    "/api/v1/understand/reload",
                    Some(serde_json::json!({ "model_path": out })),
                ))?;
                eprintln!("gateway reloaded: {answer}");
            }
        }
        IntentsCommand::Eval {
            files,
            model,
            coarse_map,
            precision,
            no_sparse_exit,
            json,
        } => {
            let path = model.unwrap_or_else(|| model_path(ucfg, &data_dir));
            let mut model = IntentModel::load(&path)?;
            // As the gateway would serve it.
            model.serve_with(ucfg);
            if no_sparse_exit {
                model.set_sparse_exit(false);
            }
            let encoder = encoder_for(&model, precision, ucfg, &data_dir)?;
            let data = Dataset::load(&files, coarse_map.as_deref())?;
            let (report, _) = evaluate(&model, &data, encoder.as_deref())?;
            if json {
                let mut v = serde_json::to_value(&report)?;
                v["model"] = path.display().to_string().into();
                outln!("{v}");
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "examples {}  accuracy {:.2}%  macro-F1 {:.2}%  coarse accuracy {:.2}%",
                report.examples,
                report.accuracy * 100.0,
                report.macro_f1 * 100.0,
                report.coarse_accuracy * 100.0
            );
            outln!(
                "classified in {:.1}s; the sparse exit answered {} of them without the encoder",
                report.classify_secs,
                report.sparse_exits
            );
            if let Some(oos) = &report.out_of_scope {
                outln!(
                    "out of scope: {} of {} examples; AUROC {:.3}; at threshold {:.2}: \
                     false accepts {:.1}%, false rejects {:.1}%; false accepts at 95% recall {:.1}%",
                    oos.out_of_scope,
                    oos.out_of_scope + oos.in_scope,
                    oos.auroc,
                    oos.threshold,
                    oos.false_accept_rate * 100.0,
                    oos.false_reject_rate * 100.0,
                    oos.far_at_95_recall * 100.0
                );
            }
            let mut errors: Vec<_> = report.per_class_errors.iter().collect();
            errors.sort_by(|a, b| b.1.errors.cmp(&a.1.errors).then(a.0.cmp(b.0)));
            if !errors.is_empty() {
                outln!("most errors (intent: wrong/support, most often taken for):");
            }
            for (class, e) in errors.iter().take(15) {
                outln!(
                    "  {class}: {}/{} -> {}",
                    e.errors,
                    e.support,
                    e.confused_with
                );
            }
        }
        IntentsCommand::Predict { text, model } => {
            let path = model.unwrap_or_else(|| model_path(ucfg, &data_dir));
            let mut model = IntentModel::load(&path)?;
            model.serve_with(ucfg);
            let encoder = encoder_for(&model, None, ucfg, &data_dir)?;
            let p = model.predict_long(
                &text,
                encoder.as_deref(),
                moltbot_understand::service::LONG_TEXT_WORDS,
            )?;
            outln!("{}", serde_json::to_string_pretty(&p)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The encoder a saved model was trained with, at the asked precision or, without one, the
/// precision the model was trained at (the `/f32` or `/int8` end of its encoder name).
fn encoder_for(
    model: &IntentModel,
    precision: Option<moltbot_core::config::EncoderPrecision>,
    ucfg: &moltbot_core::config::UnderstandingConfig,
    data_dir: &Path,
) -> anyhow::Result<Option<Arc<dyn Encoder>>> {
    use moltbot_core::config::{EncoderChoice, EncoderPrecision};
    let Some(name) = model.encoder_name() else {
        return Ok(None);
    };
    let precision = precision.unwrap_or(if name.ends_with("/int8") {
        EncoderPrecision::Int8
    } else {
        EncoderPrecision::F32
    });
    load_encoder(
        EncoderChoice::Minilm,
        precision,
        ucfg.encoder_path.as_deref(),
        data_dir,
        true,
    )
}
