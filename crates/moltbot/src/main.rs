use clap::Parser;

// jemalloc instead of the system allocator. Under sustained mixed load, glibc kept freed
// memory in its arenas and the gateway's RSS climbed for 15 minutes (+8.7 % trend over a
// 30-minute soak; flat with jemalloc, BENCHMARKS.md): jemalloc hands unused pages back on a
// timer (its background thread).
// llama.cpp and SQLite keep the system allocator: only Rust allocations come here.
// `--no-default-features --features local` builds with the system allocator.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
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
