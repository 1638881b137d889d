//! The command tree. Doc comments are the help text.
//!
//! Exit codes: 0 success, 1 failure (doctor: a check failed), 2 bad usage (clap).

use clap::{Args, Parser, Subcommand};
use moltbot_core::config::{EncoderChoice, EncoderPrecision, MisfirePolicy};
use moltbot_core::Secret;
use std::net::IpAddr;
use std::path::PathBuf;

fn parse_secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s))
}

/// moltbot: your self-hosted AI assistant gateway.
#[derive(Debug, Parser)]
#[command(name = "moltbot", version, about, long_about = None)]
pub struct Cli {
    /// Config file (default: ~/.moltbot/moltbot.toml).
    #[arg(long, global = true, env = "MOLTBOT_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (HTTP, OpenAI-compatible API, OpenClaw WebSocket) in the foreground.
    Gateway(GatewayArgs),
    /// Chat in the terminal with a running gateway, or in process with --local.
    Chat(ChatArgs),
    /// Check config, data dir, port, model files and store; print the environment.
    Doctor(DoctorArgs),
    /// Manage local models.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Inspect stored conversations.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Approve people who asked to talk to the assistant through a channel.
    Pairing {
        #[command(subcommand)]
        command: PairingCommand,
    },
    /// Messaging channels (asks the running gateway).
    Channels {
        #[command(subcommand)]
        command: ChannelsCommand,
    },
    /// Tools and skills the running gateway has loaded, and why others are not.
    Capabilities {
        #[command(flatten)]
        gateway: GatewayClientArgs,
        #[arg(long)]
        json: bool,
    },
    /// Commands waiting for the owner's approval (`tools.exec.policy = "ask"`).
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Send messages through a channel (via the running gateway).
    Message {
        #[command(subcommand)]
        command: MessageCommand,
    },
    /// Scheduled jobs: reminders and recurring prompts, run by the gateway.
    Cron {
        #[command(subcommand)]
        command: CronCommand,
    },
    /// Add documents to the knowledge store and search them.
    Knowledge {
        #[command(subcommand)]
        command: KnowledgeCommand,
    },
    /// Train, evaluate and try the intent classifier (understanding).
    Intents {
        #[command(subcommand)]
        command: IntentsCommand,
    },
    /// Write, check or show the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// First-run wizard: model provider, channels, port, token and data dir; writes the
    /// config (0600). `--non-interactive` with flags for scripts.
    Onboard(Box<crate::cmd::onboard::OnboardArgs>),
    /// Run the gateway as a background service (systemd user unit; launchd on macOS).
    Daemon {
        #[command(subcommand)]
        command: crate::cmd::daemon::DaemonCommand,
    },
    /// One screen: config path, data dir, service state and the gateway's health.
    Status,
    /// The gateway service's log (journalctl --user -u moltbot.service).
    Logs(crate::cmd::logs::LogsArgs),
    /// Import a Clawdbot/Moltbot/OpenClaw home: config, channels, allowlists, cron jobs,
    /// workspace files, skills and transcripts. Prints what maps and what does not.
    Migrate(MigrateArgs),
    /// Run a fake OpenAI-compatible model server that answers instantly (for benchmarks).
    #[command(hide = true)]
    MockLlm {
        #[arg(long, default_value = "127.0.0.1:18790")]
        listen: String,
    },
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Port to listen on (overrides gateway.port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to bind (overrides gateway.bind). Non-loopback requires a token.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Log debug details.
    #[arg(long, short)]
    pub verbose: bool,
    /// Log one JSON object per line.
    #[arg(long)]
    pub json_logs: bool,
    /// Data folder (overrides data.dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The home to import (default: the first of ~/.openclaw, ~/.clawdbot, ~/.moltbot that
    /// holds an OpenClaw-style config). The config is written to --config.
    #[arg(long = "from-clawdbot", value_name = "PATH", num_args = 0..=1, required = true)]
    pub from_clawdbot: Option<Option<PathBuf>>,
    /// Print the report only; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Gateway URL.
    #[arg(long, default_value = "http://127.0.0.1:18789", env = "MOLTBOT_URL")]
    pub url: String,
    /// Bearer token of the gateway.
    #[arg(long, env = "MOLTBOT_GATEWAY_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub token: Option<Secret>,
    /// Session to continue (default: a new one).
    #[arg(long)]
    pub session: Option<String>,
    /// Run the engine in this process instead of talking to a gateway.
    #[arg(long)]
    pub local: bool,
    /// Send this one message, print the reply and exit.
    #[arg(long, short)]
    pub message: Option<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Repair what can be repaired safely: file permissions, a missing data folder, a
    /// missing local model (fetched), a stopped service (started).
    #[arg(long)]
    pub fix: bool,
}

#[derive(Debug, Subcommand)]
pub enum KnowledgeCommand {
    /// Add files or folders (txt, md, html, pdf; folders recursively). Unchanged files are
    /// skipped, changed ones replaced.
    Add {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        gateway: GatewayClientArgs,
    },
    /// Search by meaning and keywords; prints the best passages with their sources.
    Search {
        query: String,
        /// How many passages.
        #[arg(long, short = 'k', default_value_t = 5)]
        k: usize,
        /// hybrid, vector or keyword.
        #[arg(long, default_value = "hybrid")]
        mode: String,
        /// Only passages from this source (repeatable).
        #[arg(long)]
        source: Vec<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        gateway: GatewayClientArgs,
    },
    /// The stored sources.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        gateway: GatewayClientArgs,
    },
    /// Remove a source and its passages.
    Remove {
        source: String,
        #[command(flatten)]
        gateway: GatewayClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum CronCommand {
    /// Add a job: one schedule (--cron, --every or --at), one payload (--message or
    /// --prompt) and one target (--channel with --to, or --session). Prints the job id.
    Add(Box<CronAddArgs>),
    /// The jobs and their next runs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a job and its run history.
    #[command(alias = "remove")]
    Rm { id: String },
    /// Run a job now, whatever its schedule (a running gateway starts it within a few
    /// seconds).
    Run { id: String },
    /// A job's recent runs, newest first.
    Runs {
        id: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Pause a job.
    Disable { id: String },
    /// Resume a paused job from its next scheduled time.
    Enable { id: String },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("schedule").required(true).args(["cron", "every", "at"])))]
#[command(group(clap::ArgGroup::new("payload").required(true).args(["message", "prompt"])))]
#[command(group(clap::ArgGroup::new("target").required(true).args(["channel", "session"])))]
pub struct CronAddArgs {
    /// A label for lists (default: the start of the message or prompt).
    #[arg(long)]
    pub name: Option<String>,
    /// A 5-field cron pattern (minute hour day-of-month month day-of-week), e.g.
    /// "0 9 * * 1-5".
    #[arg(long)]
    pub cron: Option<String>,
    /// An interval: 90s, 10m, 2h, 1d (10 s to 366 d).
    #[arg(long)]
    pub every: Option<String>,
    /// Once, at a local time in --tz (2026-12-01T09:00) or an RFC 3339 time with offset.
    #[arg(long)]
    pub at: Option<String>,
    /// IANA time zone of --cron and --at (default: tools.cron.default_tz, else UTC).
    #[arg(long)]
    pub tz: Option<String>,
    /// Text to deliver (a reminder).
    #[arg(long)]
    pub message: Option<String>,
    /// A prompt to run through the assistant; its answer is delivered.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Deliver to a chat on this channel (telegram, whatsapp, discord, slack)...
    #[arg(long, requires = "to")]
    pub channel: Option<String>,
    /// ...with this chat id (Telegram chat id, WhatsApp number, Discord/Slack channel id).
    #[arg(long, requires = "channel")]
    pub to: Option<String>,
    /// Deliver into this stored session instead.
    #[arg(long)]
    pub session: Option<String>,
    /// Runs missed while the gateway was down: run_once or skip (default: tools.cron.misfire).
    #[arg(long, value_parser = parse_misfire)]
    pub misfire: Option<MisfirePolicy>,
}

#[derive(Debug, Subcommand)]
pub enum IntentsCommand {
    /// Train a model from intents files (YAML/JSON) or `text<TAB>label` TSV files.
    Train {
        /// Training files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where to write the model (default: understanding.model_path, which the gateway
        /// loads).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Groups for bare TSV labels: `fine<TAB>coarse` lines or a YAML/JSON object.
        #[arg(long)]
        coarse_map: Option<PathBuf>,
        /// Train only on the labels listed in this file (one per line), e.g. to hold some
        /// intents out for an out-of-scope evaluation.
        #[arg(long)]
        only_labels: Option<PathBuf>,
        /// Also include the built-in English/Chinese intents pack.
        #[arg(long)]
        with_builtin: bool,
        /// Sentence encoder: minilm or none (default: understanding.encoder).
        #[arg(long, value_parser = parse_encoder)]
        encoder: Option<EncoderChoice>,
        /// Encoder precision: f32 or int8 (default: understanding.precision).
        #[arg(long, value_parser = parse_precision)]
        precision: Option<EncoderPrecision>,
        /// Fine-tune the encoder's last N layers on the examples before fitting the heads
        /// (0 = keep the encoder frozen; default: understanding.tune_layers, 0). Takes
        /// minutes for ~10⁴ examples; skipped when the data have fewer than 8 examples per
        /// intent on average.
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=6))]
        tune_layers: Option<u8>,
        /// Epochs of fine-tuning (default: understanding.tune_epochs, 2).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=20))]
        tune_epochs: Option<u8>,
        /// Ask the running gateway to load the new model (no restart).
        #[arg(long)]
        reload: bool,
        #[command(flatten)]
        gateway: GatewayClientArgs,
        /// Print the training report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a model on labelled files: accuracy, macro-F1, per-class errors, and
    /// out-of-scope metrics for examples of intents the model does not know.
    Eval {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Model file (default: understanding.model_path).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        coarse_map: Option<PathBuf>,
        /// Encoder precision used to embed the evaluation texts (default: the config's).
        #[arg(long, value_parser = parse_precision)]
        precision: Option<EncoderPrecision>,
        /// Run every example through the encoder, even those the sparse exit would answer
        /// (default: understanding.sparse_exit).
        #[arg(long)]
        no_sparse_exit: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Classify one text.
    Predict {
        text: String,
        #[arg(long)]
        model: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download the embedded default model (SmolLM2-135M-Instruct) and the sentence encoder
    /// (all-MiniLM-L6-v2) into the model cache.
    Fetch,
    /// List models in the cache.
    List,
    /// Check that llama.cpp can load a GGUF file (as the gateway would). The gateway
    /// runs this in a child process before loading a model in its own, because llama.cpp
    /// aborts the whole process on some malformed files.
    Check {
        /// The GGUF file.
        path: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List sessions, most recent first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one session's messages.
    Show {
        id: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a commented example config (default path: ~/.moltbot/moltbot.toml).
    Init {
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Load and check the config; print the problem and exit 1 if it is invalid.
    Validate,
    /// Print the effective config (defaults, file and environment merged; secrets hidden).
    Show,
}

/// Where the running gateway is.
#[derive(Debug, Clone, Args)]
pub struct GatewayClientArgs {
    /// Gateway URL (default: from gateway.bind and gateway.port in the config).
    #[arg(long, env = "MOLTBOT_URL")]
    pub url: Option<String>,
    /// Bearer token of the gateway (default: gateway.token from the config).
    #[arg(long, env = "MOLTBOT_GATEWAY_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub token: Option<Secret>,
}

#[derive(Debug, Subcommand)]
pub enum PairingCommand {
    /// Pairing codes waiting for approval, and the approved senders.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Approve the sender holding CODE on CHANNEL (telegram, whatsapp, discord, slack).
    Approve { channel: String, code: String },
    /// Allow a sender by their platform id, without a code.
    Allow { channel: String, sender: String },
    /// Revoke a sender's access.
    Revoke { channel: String, sender: String },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Pending requests, oldest first.
    List {
        #[command(flatten)]
        gateway: GatewayClientArgs,
        #[arg(long)]
        json: bool,
    },
    /// Let request ID run.
    Approve {
        id: String,
        #[command(flatten)]
        gateway: GatewayClientArgs,
    },
    /// Refuse request ID.
    Deny {
        id: String,
        #[command(flatten)]
        gateway: GatewayClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ChannelsCommand {
    /// Each channel's connection state and outbox (exit 1 if the gateway is unreachable).
    Status {
        #[command(flatten)]
        gateway: GatewayClientArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// Send TEXT to a chat; prints the platform's message ids.
    Send {
        /// telegram, whatsapp, discord or slack.
        #[arg(long)]
        channel: String,
        /// The chat: Telegram chat id, WhatsApp phone number, Discord/Slack channel id.
        #[arg(long)]
        to: String,
        text: String,
        /// Return once queued instead of waiting for the platform to confirm.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        gateway: GatewayClientArgs,
        #[arg(long)]
        json: bool,
    },
}

fn parse_misfire(s: &str) -> Result<MisfirePolicy, String> {
    match s {
        "run_once" => Ok(MisfirePolicy::RunOnce),
        "skip" => Ok(MisfirePolicy::Skip),
        _ => Err(format!("expected `run_once` or `skip`, got `{s}`")),
    }
}

fn parse_encoder(s: &str) -> Result<EncoderChoice, String> {
    match s {
        "minilm" => Ok(EncoderChoice::Minilm),
        "none" => Ok(EncoderChoice::None),
        _ => Err(format!("expected `minilm` or `none`, got `{s}`")),
    }
}

fn parse_precision(s: &str) -> Result<EncoderPrecision, String> {
    match s {
        "auto" => Ok(EncoderPrecision::Auto),
        "f32" => Ok(EncoderPrecision::F32),
        "int8" => Ok(EncoderPrecision::Int8),
        _ => Err(format!("expected `auto`, `f32` or `int8`, got `{s}`")),
    }
}
