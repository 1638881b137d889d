use clap::Parser;

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
