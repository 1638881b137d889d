//! One place to set up `tracing`.

use tracing_subscriber::EnvFilter;

/// Log to stderr. `RUST_LOG` wins over `level`; `verbose` raises moltbot's own logs to debug.
pub fn init_logging(level: &str, verbose: bool, json: bool) {
    // llama.cpp reports model loading at info level: keep it to warnings unless verbose.
    let default = if verbose {
        format!(
            "{level},moltbot=debug,moltbot_gateway=debug,moltbot_engine=debug,\
             moltbot_models=debug,tower_http=debug,llama-cpp-2=info"
        )
    } else {
        format!("{level},llama-cpp-2=warn")
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: log files and journald get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
