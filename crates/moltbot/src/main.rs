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
        // A reader that went away (`moltbot logs | head`) ends the command, quietly.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
