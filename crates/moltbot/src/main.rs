use clap::Parser;

// jemalloc instead of the system allocator. Under hours of mixed load, glibc's per-thread
// arenas kept freed memory and the gateway's RSS crept up by ~7 % over a 30-minute soak
// (BENCHMARKS.md); jemalloc returns unused pages on a timer (its background thread).
// llama.cpp and SQLite keep the system allocator: only Rust allocations come here.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = moltbot::cli::Cli::parse();
    match moltbot::cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
