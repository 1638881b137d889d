//! Glue for the `moltbot` binary: CLI commands, logging set-up and building the model
//! providers from config. The product's logic lives in the library crates.
//!
//! # Layout
//! - [`cli`]: the clap command tree.
//! - [`cmd`]: one file per command (`gateway`, `chat`, `doctor`, `models`, `sessions`,
//!   `config`, `onboard`, `daemon`, `status`, `logs`, `mock_llm`, `migrate` — a folder:
//!   `source` reads an OpenClaw home, `map` maps its config).
//! - [`logging`]: `init_logging` (text or JSON, `--verbose`).
//! - [`providers`]: turn `[model]` config into a `ChatModel` (with failover).
//! - [`understanding`]: turn `[understanding]` config into the encoder + intent model.

pub mod cli;
pub mod cmd;
pub mod logging;
pub mod providers;
pub mod understanding;
