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

/// `println!` for command output. When the reader has gone (`moltbot … | head`, `| grep -q`),
/// the command stops quietly with status 0, as `ripgrep` and `git` do, instead of panicking
/// on the broken pipe. Any other write error is a real failure and still panics.
macro_rules! outln {
    () => {
        $crate::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` with the same broken-pipe handling as [`outln!`]; the text is flushed at once,
/// so a streamed reply shows as it comes.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*))
    };
}

/// Writes to stdout for [`outln!`] and [`out!`].
#[doc(hidden)]
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        panic!("failed printing to stdout: {e}");
    }
}

pub mod cli;
pub mod cmd;
pub mod logging;
pub mod providers;
pub mod understanding;
