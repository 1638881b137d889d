//! Build the serving model from the `[model]` config: one provider, or several behind
//! failover in the configured order, with the response filter (`[model.filter]`) on top.

use anyhow::Context;
use moltbot_core::config::{ModelConfig, ProviderKind};
use moltbot_core::envinfo::EnvSnapshot;
use moltbot_core::{ChatModel, Secret};
use moltbot_models::filter::{FilteredModel, ResponseFilter};
use moltbot_models::providers::{
    anthropic::AnthropicProvider, failover::Failover, openai::OpenAiProvider,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The GGUF file the local provider will load: the configured path, or the embedded
/// default in the model cache (fetched if missing when `fetch` is set).
pub fn local_model_path(
    cfg: &ModelConfig,
    data_dir: &Path,
    fetch: bool,
) -> anyhow::Result<PathBuf> {
    if let Some(p) = &cfg.local.path {
        anyhow::ensure!(
            p.is_file(),
            "model.local.path {} does not exist or is not a file",
            p.display()
        );
        return Ok(p.clone());
    }
    let models = data_dir.join("models");
    let default = moltbot_models::fetch::default_model_path(&models);
    if default.is_file() || !fetch {
        return Ok(default);
    }
    moltbot_models::fetch::ensure_default_model(&models, true)
        .context("fetching the embedded default model")
}

/// Build one provider (blocking: the local model maps its weights).
fn build_one(
    kind: ProviderKind,
    cfg: &ModelConfig,
    data_dir: &Path,
    env: &EnvSnapshot,
) -> anyhow::Result<Arc<dyn ChatModel>> {
    Ok(match kind {
        ProviderKind::Openai => Arc::new(OpenAiProvider::new(&cfg.openai)?),
        ProviderKind::Anthropic => Arc::new(AnthropicProvider::new(&cfg.anthropic)?),
        ProviderKind::Local => build_local(cfg, data_dir, env)?,
    })
}

#[cfg(feature = "local")]
fn build_local(
    cfg: &ModelConfig,
    data_dir: &Path,
    env: &EnvSnapshot,
) -> anyhow::Result<Arc<dyn ChatModel>> {
    let path = local_model_path(cfg, data_dir, true)?;
    let threads = if cfg.local.threads == 0 {
        env.inference_threads()
    } else {
        cfg.local.threads
    };
    check_in_child(&path)?;
    let model = moltbot_models::providers::local::LocalModel::load(&path, &cfg.local, threads)
        .with_context(|| format!("loading {}", path.display()))?;
    Ok(Arc::new(model))
}

/// llama.cpp aborts the whole process (`GGML_ASSERT`) on some malformed GGUF files instead
/// of returning an error — the GGUF fuzz target found a layer count past its limit. A file is
/// therefore loaded first by a child process (`moltbot models check`, weights
/// memory-mapped); if the child fails or dies, the file is refused with the child's last
/// words and this process (a running gateway, during a hot swap) lives on.
#[cfg(feature = "local")]
fn check_in_child(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::ExitStatusExt;
    let exe = std::env::current_exe().context("cannot find the moltbot executable")?;
    let out = std::process::Command::new(exe)
        .args(["models", "check"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run `moltbot models check`")?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = stderr
        .lines()
        .find(|l| l.contains("GGML_ASSERT"))
        .or_else(|| stderr.lines().rfind(|l| l.starts_with("error")))
        .unwrap_or("")
        .trim();
    match out.status.signal() {
        Some(sig) => anyhow::bail!(
            "llama.cpp crashed (signal {sig}) reading {}: {said}; the file is malformed",
            path.display()
        ),
        None => anyhow::bail!("{} cannot be loaded: {said}", path.display()),
    }
}

#[cfg(not(feature = "local"))]
fn build_local(
    _cfg: &ModelConfig,
    _data_dir: &Path,
    _env: &EnvSnapshot,
) -> anyhow::Result<Arc<dyn ChatModel>> {
    anyhow::bail!(
        "this moltbot was built without the `local` feature; configure model.providers = \
         [\"openai\"] or [\"anthropic\"], or rebuild with --features local"
    )
}

/// Build the configured providers; more than one are wrapped in failover, and the whole
/// chain in the response filter unless `model.filter.enabled = false`.
pub fn build_model(
    cfg: &ModelConfig,
    data_dir: &Path,
    env: &EnvSnapshot,
) -> anyhow::Result<Arc<dyn ChatModel>> {
    // Compiled first: a bad pattern should not wait for the model to load.
    let filter = if cfg.filter.enabled {
        Some(ResponseFilter::new(&cfg.filter)?)
    } else {
        None
    };
    let mut models = Vec::with_capacity(cfg.providers.len());
    for kind in &cfg.providers {
        models.push(
            build_one(*kind, cfg, data_dir, env)
                .with_context(|| format!("provider {:?}", kind.as_str()))?,
        );
    }
    // Always through `Failover`, even for one provider: it also counts calls and times them
    // per provider (`moltbot_provider_*`).
    let chain: Arc<dyn ChatModel> = Arc::new(Failover::new(models));
    Ok(match filter {
        Some(filter) => Arc::new(FilteredModel::new(chain, filter)),
        None => chain,
    })
}

/// Loads new model versions for the admin API (`POST /admin/model/load`) with the gateway's
/// model settings: a GGUF path becomes the local provider, a provider spec an
/// OpenAI-compatible or Anthropic one (its key read from the named environment variable).
pub struct ConfigLoader {
    pub cfg: ModelConfig,
    pub data_dir: std::path::PathBuf,
    pub env: EnvSnapshot,
}

impl moltbot_gateway::routes::admin::ModelLoader for ConfigLoader {
    fn describe(&self, spec: &moltbot_gateway::routes::admin::LoadSpec) -> String {
        match (&spec.model_path, &spec.provider) {
            (Some(p), _) => format!("local {p}"),
            (None, Some(p)) => format!(
                "{} {} {}",
                p.kind,
                p.base_url.as_deref().unwrap_or("(default url)"),
                p.model
            ),
            (None, None) => "nothing".into(),
        }
    }

    fn load(
        &self,
        spec: &moltbot_gateway::routes::admin::LoadSpec,
    ) -> Result<Arc<dyn ChatModel>, String> {
        let mut cfg = self.cfg.clone();
        match (&spec.model_path, &spec.provider) {
            (Some(path), _) => {
                let path = std::path::PathBuf::from(path);
                if !path.is_file() {
                    return Err(format!("`model_path` {} is not a file", path.display()));
                }
                cfg.providers = vec![ProviderKind::Local];
                cfg.local.path = Some(path);
            }
            (None, Some(p)) => {
                let key = match &p.api_key_env {
                    Some(var) => Some(Secret::new(std::env::var(var).map_err(|_| {
                        format!("`provider.api_key_env`: the variable {var} is not set")
                    })?)),
                    None => None,
                };
                match p.kind.as_str() {
                    "openai" => {
                        cfg.providers = vec![ProviderKind::Openai];
                        if let Some(u) = &p.base_url {
                            cfg.openai.base_url = u.clone();
                        }
                        cfg.openai.model = p.model.clone();
                        cfg.openai.api_key = key.or(cfg.openai.api_key);
                    }
                    "anthropic" => {
                        cfg.providers = vec![ProviderKind::Anthropic];
                        if let Some(u) = &p.base_url {
                            cfg.anthropic.base_url = u.clone();
                        }
                        cfg.anthropic.model = p.model.clone();
                        cfg.anthropic.api_key = key.or(cfg.anthropic.api_key);
                    }
                    other => {
                        return Err(format!(
                            "`provider.kind` must be openai or anthropic, got {other:?}"
                        ))
                    }
                }
            }
            (None, None) => return Err("give `model_path` or `provider`".into()),
        }
        build_model(&cfg, &self.data_dir, &self.env).map_err(|e| format!("{e:#}"))
    }
}
