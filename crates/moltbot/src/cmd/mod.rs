//! One file per command. `run` dispatches and returns the process exit code.

pub mod channels;
pub mod chat;
mod client;
pub mod config;
pub mod cron;
pub mod daemon;
pub mod doctor;
pub mod gateway;
pub mod intents;
pub mod knowledge;
pub mod logs;
pub mod migrate;
pub mod models;
pub mod onboard;
pub mod pairing;
pub mod sessions;
pub mod status;

use crate::cli::{Cli, Command};
use moltbot_core::Config;
use std::process::ExitCode;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = cli.config.clone();
    match cli.command {
        Command::Gateway(args) => gateway::run(config_path.as_deref(), args),
        Command::Chat(args) => chat::run(config_path.as_deref(), args),
        Command::Doctor(args) => doctor::run(config_path.as_deref(), args),
        Command::Models { command } => models::run(config_path.as_deref(), command),
        Command::Sessions { command } => sessions::run(config_path.as_deref(), command),
        Command::Pairing { command } => pairing::run(config_path.as_deref(), command),
        Command::Channels { command } => channels::run_status(config_path.as_deref(), command),
        Command::Capabilities { gateway, json } => {
            channels::run_capabilities(config_path.as_deref(), gateway, json)
        }
        Command::Approvals { command } => channels::run_approvals(config_path.as_deref(), command),
        Command::Message { command } => channels::run_message(config_path.as_deref(), command),
        Command::Cron { command } => cron::run(config_path.as_deref(), command),
        Command::Knowledge { command } => knowledge::run(config_path.as_deref(), command),
        Command::Intents { command } => intents::run(config_path.as_deref(), command),
        Command::Config { command } => config::run(config_path.as_deref(), command),
        Command::Onboard(args) => onboard::run(config_path.as_deref(), *args),
        Command::Daemon { command } => daemon::run(config_path.as_deref(), command),
        Command::Status => status::run(config_path.as_deref()),
        Command::Logs(args) => logs::run(config_path.as_deref(), args),
        Command::Migrate(args) => migrate::run(config_path.as_deref(), args),
        Command::MockLlm { listen } => mock_llm(&listen),
    }
}

/// Load the layered config with a clear error.
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

/// A current-thread runtime for short client commands.
/// The configured store — PostgreSQL when `data.database_url` is set, else the SQLite file
/// in the data folder — opened on `rt`.
pub fn open_store(
    cfg: &moltbot_core::config::Config,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<moltbot_store::Store> {
    use anyhow::Context as _;
    rt.block_on(moltbot_store::Store::from_config(&cfg.data))
        .context("opening the store")
}

pub fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn mock_llm(listen: &str) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        eprintln!("mock OpenAI server on http://{}/v1", listener.local_addr()?);
        moltbot_fakes::serve_openai(listener, moltbot_fakes::FakeConfig::default()).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
