//! `moltbot config init|validate|show`.

use crate::cli::ConfigCommand;
use anyhow::Context;
use moltbot_core::config::{default_config_path, EXAMPLE_CONFIG};
use std::path::Path;
use std::process::ExitCode;

pub fn run(config_path: Option<&Path>, command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Init { force } => {
            let path = config_path
                .map(Path::to_path_buf)
                .unwrap_or_else(default_config_path);
            anyhow::ensure!(
                force || !path.exists(),
                "{} exists; pass --force to overwrite",
                path.display()
            );
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            write_private(&path, EXAMPLE_CONFIG)
                .with_context(|| format!("writing {}", path.display()))?;
            outln!("{}", path.display());
        }
        ConfigCommand::Validate => match super::load_config(config_path) {
            Ok(cfg) => {
                cfg.check_bind_safety()?;
                eprintln!("config ok");
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                return Ok(ExitCode::from(1));
            }
        },
        ConfigCommand::Show => {
            let cfg = super::load_config(config_path)?;
            // Secrets serialise as "***".
            out!("{}", toml::to_string_pretty(&cfg)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Config files may hold secrets: create them readable by the owner only.
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    // `mode` only applies to a new file; an overwritten one is tightened too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(text.as_bytes())
}
