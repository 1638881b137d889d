//! `moltbot onboard`: the first-run wizard.
//!
//! Asks for the model provider, channels, port and bind address, a gateway token and the
//! data dir, then writes a config holding only the values that differ from the defaults
//! (mode 0600: it holds secrets). `--non-interactive` takes the same answers from flags;
//! secrets come from environment variables named by `--*-env` flags, never from argv.
//!
//! Exit codes: 0 written, 1 refused (the config exists without `--force`, a missing
//! secret, an invalid answer) or the service install failed.

use anyhow::Context;
use clap::{Args, ValueEnum};
use moltbot_core::config::{default_config_path, Config};
use std::io::{BufRead, IsTerminal, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct OnboardArgs {
    /// Take every answer from flags (for scripts); nothing is asked.
    #[arg(long)]
    pub non_interactive: bool,
    /// Model provider: local (embedded model), openai (any OpenAI-compatible server) or
    /// anthropic.
    #[arg(long, value_enum)]
    pub provider: Option<ProviderChoice>,
    /// Base URL of the OpenAI-compatible server, up to /v1 (e.g. http://127.0.0.1:11434/v1).
    #[arg(long)]
    pub openai_base_url: Option<String>,
    /// Model name for openai or anthropic.
    #[arg(long)]
    pub model: Option<String>,
    /// Read the provider's API key from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// Enable Telegram with the bot token read from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub telegram_token_env: Option<String>,
    /// Enable WhatsApp (Cloud API) with the access token read from this environment variable;
    /// also needs --whatsapp-phone-number-id, --whatsapp-verify-token-env and
    /// --whatsapp-app-secret-env.
    #[arg(long, value_name = "VAR")]
    pub whatsapp_token_env: Option<String>,
    #[arg(long, requires = "whatsapp_token_env")]
    pub whatsapp_phone_number_id: Option<String>,
    #[arg(long, value_name = "VAR", requires = "whatsapp_token_env")]
    pub whatsapp_verify_token_env: Option<String>,
    #[arg(long, value_name = "VAR", requires = "whatsapp_token_env")]
    pub whatsapp_app_secret_env: Option<String>,
    /// Gateway port (default 18789).
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to bind (default 127.0.0.1). Anything but loopback requires a token.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Data folder for the store and model cache (default ~/.moltbot).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Gateway bearer token: generate a random one (default) or none (loopback only).
    #[arg(long, value_enum)]
    pub token: Option<TokenChoice>,
    /// Overwrite an existing config file.
    #[arg(long)]
    pub force: bool,
    /// Then install and start the background service (`moltbot daemon install`).
    #[arg(long)]
    pub install_daemon: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderChoice {
    Local,
    Openai,
    Anthropic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenChoice {
    Generate,
    None,
}

/// Everything the wizard decides; [`render_config`] turns it into TOML.
#[derive(Debug, Clone, PartialEq)]
pub struct Answers {
    pub provider: Provider,
    pub telegram_token: Option<String>,
    pub whatsapp: Option<WhatsApp>,
    pub port: u16,
    pub bind: IpAddr,
    pub token: Option<String>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    Local,
    OpenAi {
        base_url: String,
        model: String,
        api_key: Option<String>,
    },
    Anthropic {
        model: String,
        api_key: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct WhatsApp {
    pub access_token: String,
    pub phone_number_id: String,
    pub verify_token: String,
    pub app_secret: String,
}

pub fn run(config_path: Option<&Path>, args: OnboardArgs) -> anyhow::Result<ExitCode> {
    let path = config_path
        .map(Path::to_path_buf)
        .unwrap_or_else(default_config_path);
    // Refuse before asking anything, so nobody types answers for nothing.
    anyhow::ensure!(
        args.force || !path.exists(),
        "{} exists; pass --force to overwrite it (or --config to write another file)",
        path.display()
    );
    // The wizard asks for these; silently ignoring them would surprise.
    let answer_flags = args.provider.is_some()
        || args.openai_base_url.is_some()
        || args.model.is_some()
        || args.api_key_env.is_some()
        || args.telegram_token_env.is_some()
        || args.whatsapp_token_env.is_some()
        || args.port.is_some()
        || args.bind.is_some()
        || args.data_dir.is_some()
        || args.token.is_some();
    anyhow::ensure!(
        args.non_interactive || !answer_flags,
        "answer flags (--provider, --port, ...) need --non-interactive; \
         without it the wizard asks for everything"
    );
    let answers = if args.non_interactive {
        from_flags(&args, |var| std::env::var(var).ok())?
    } else {
        let mut p = Prompter::stdin();
        eprintln!("moltbot setup: press Enter to accept the [default].");
        wizard(&mut p)?
    };
    let text = render_config(&answers)?;
    write_checked(&path, &text)?;
    print_next_steps(&path, config_path.is_some(), &answers, args.install_daemon);

    let install = args.install_daemon || (!args.non_interactive && ask_install()?);
    if install {
        return super::daemon::install(Some(&path));
    }
    Ok(ExitCode::SUCCESS)
}

fn ask_install() -> anyhow::Result<bool> {
    let mut p = Prompter::stdin();
    p.yes_no("Install and start the background service now?", false)
}

/// Answers from flags; `env` reads the variables named by `--*-env` flags.
pub fn from_flags(
    args: &OnboardArgs,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Answers> {
    let secret = |flag: &str, var: &str| -> anyhow::Result<String> {
        env(var).filter(|v| !v.is_empty()).with_context(|| {
            format!("{flag} {var}: the environment variable {var} is not set or empty")
        })
    };
    let provider_kind = args.provider.unwrap_or(ProviderChoice::Local);
    let only = |flag: &str, set: bool, kinds: &str| -> anyhow::Result<()> {
        anyhow::ensure!(!set, "{flag} applies only to --provider {kinds}");
        Ok(())
    };
    let provider = match provider_kind {
        ProviderChoice::Local => {
            only("--model", args.model.is_some(), "openai or anthropic")?;
            only(
                "--api-key-env",
                args.api_key_env.is_some(),
                "openai or anthropic",
            )?;
            only(
                "--openai-base-url",
                args.openai_base_url.is_some(),
                "openai",
            )?;
            Provider::Local
        }
        ProviderChoice::Openai => {
            let d = moltbot_core::config::OpenAiConfig::default();
            Provider::OpenAi {
                base_url: args.openai_base_url.clone().unwrap_or(d.base_url),
                model: args.model.clone().unwrap_or(d.model),
                api_key: match &args.api_key_env {
                    Some(var) => Some(secret("--api-key-env", var)?),
                    None => None,
                },
            }
        }
        ProviderChoice::Anthropic => {
            only(
                "--openai-base-url",
                args.openai_base_url.is_some(),
                "openai",
            )?;
            let var = args.api_key_env.as_deref().context(
                "--provider anthropic needs an API key: pass --api-key-env VAR with the key in $VAR",
            )?;
            Provider::Anthropic {
                model: args
                    .model
                    .clone()
                    .unwrap_or(moltbot_core::config::AnthropicConfig::default().model),
                api_key: secret("--api-key-env", var)?,
            }
        }
    };
    let telegram_token = match &args.telegram_token_env {
        Some(var) => Some(secret("--telegram-token-env", var)?),
        None => None,
    };
    let whatsapp = match &args.whatsapp_token_env {
        Some(var) => {
            let need = |flag: &str, v: &Option<String>| -> anyhow::Result<String> {
                v.clone()
                    .with_context(|| format!("--whatsapp-token-env also needs {flag}"))
            };
            Some(WhatsApp {
                access_token: secret("--whatsapp-token-env", var)?,
                phone_number_id: need(
                    "--whatsapp-phone-number-id",
                    &args.whatsapp_phone_number_id,
                )?,
                verify_token: secret(
                    "--whatsapp-verify-token-env",
                    &need(
                        "--whatsapp-verify-token-env",
                        &args.whatsapp_verify_token_env,
                    )?,
                )?,
                app_secret: secret(
                    "--whatsapp-app-secret-env",
                    &need("--whatsapp-app-secret-env", &args.whatsapp_app_secret_env)?,
                )?,
            })
        }
        None => None,
    };
    let defaults = moltbot_core::config::GatewayConfig::default();
    let token = match args.token.unwrap_or(TokenChoice::Generate) {
        TokenChoice::Generate => Some(generate_token()?),
        TokenChoice::None => None,
    };
    Ok(Answers {
        provider,
        telegram_token,
        whatsapp,
        port: args.port.unwrap_or(defaults.port),
        bind: args.bind.unwrap_or(defaults.bind),
        token,
        data_dir: args.data_dir.clone(),
    })
}

/// Line-based prompts on stderr, answers from `input` (a pipe works as well as a terminal).
/// Secrets are read without echo when the input is a terminal.
/// Reads one line into the buffer, like [`BufRead::read_line`].
type ReadLine<'a> = Box<dyn FnMut(&mut String) -> std::io::Result<usize> + 'a>;

pub struct Prompter<'a> {
    read: ReadLine<'a>,
    tty: bool,
}

impl<'a> Prompter<'a> {
    /// Answers from `input` (tests), never hidden.
    pub fn new(mut input: impl BufRead + 'a) -> Self {
        Self {
            read: Box::new(move |line| input.read_line(line)),
            tty: false,
        }
    }

    /// Answers from stdin. It is locked per line, not held: hidden input on a terminal
    /// reads stdin itself.
    pub fn stdin() -> Self {
        Self {
            read: Box::new(|line| std::io::stdin().read_line(line)),
            tty: std::io::stdin().is_terminal(),
        }
    }

    fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        let n = (self.read)(&mut line)?;
        anyhow::ensure!(
            n > 0,
            "stdin closed before the wizard finished\nhint: for scripts use \
             `moltbot onboard --non-interactive` with flags (see --help)"
        );
        Ok(line.trim().to_string())
    }

    /// A free-text answer; empty means `default`.
    pub fn text(&mut self, question: &str, default: &str) -> anyhow::Result<String> {
        if default.is_empty() {
            eprint!("{question}: ");
        } else {
            eprint!("{question} [{default}]: ");
        }
        std::io::stderr().flush()?;
        let answer = self.read_line()?;
        Ok(if answer.is_empty() {
            default.to_string()
        } else {
            answer
        })
    }

    /// A secret: not echoed on a terminal, never printed back. Empty means none.
    pub fn secret(&mut self, question: &str) -> anyhow::Result<Option<String>> {
        eprint!("{question} (input hidden): ");
        std::io::stderr().flush()?;
        let answer = if self.tty {
            console::Term::stderr()
                .read_secure_line()?
                .trim()
                .to_string()
        } else {
            self.read_line()?
        };
        Ok(Some(answer).filter(|a| !a.is_empty()))
    }

    pub fn yes_no(&mut self, question: &str, default: bool) -> anyhow::Result<bool> {
        let hint = if default { "Y/n" } else { "y/N" };
        loop {
            eprint!("{question} [{hint}]: ");
            std::io::stderr().flush()?;
            match self.read_line()?.to_ascii_lowercase().as_str() {
                "" => return Ok(default),
                "y" | "yes" => return Ok(true),
                "n" | "no" => return Ok(false),
                other => eprintln!("please answer y or n, got `{other}`"),
            }
        }
    }

    /// One of `options` by number or name; empty means the first.
    pub fn choice(&mut self, question: &str, options: &[(&str, &str)]) -> anyhow::Result<usize> {
        eprintln!("{question}");
        for (i, (name, help)) in options.iter().enumerate() {
            eprintln!("  {}) {name:<10} {help}", i + 1);
        }
        loop {
            let answer = self.text("choice", options[0].0)?;
            let by_number = answer
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=options.len()).contains(n))
                .map(|n| n - 1);
            let by_name = options.iter().position(|(name, _)| *name == answer);
            match by_number.or(by_name) {
                Some(i) => return Ok(i),
                None => eprintln!("expected 1-{} or a name, got `{answer}`", options.len()),
            }
        }
    }

    fn parsed<T: std::str::FromStr>(&mut self, question: &str, default: &str) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        loop {
            let answer = self.text(question, default)?;
            match answer.parse::<T>() {
                Ok(v) => return Ok(v),
                Err(e) => eprintln!("`{answer}`: {e}"),
            }
        }
    }
}

/// The interactive questions, in order. Tests drive it through a pipe.
pub fn wizard(p: &mut Prompter<'_>) -> anyhow::Result<Answers> {
    let provider = match p.choice(
        "Model provider:",
        &[
            (
                "local",
                "embedded model on this machine, no account (default)",
            ),
            (
                "openai",
                "any OpenAI-compatible server: OpenAI, Ollama, vLLM, llama.cpp",
            ),
            ("anthropic", "Anthropic API (needs a key)"),
        ],
    )? {
        0 => Provider::Local,
        1 => {
            let d = moltbot_core::config::OpenAiConfig::default();
            Provider::OpenAi {
                base_url: p.text("Base URL (up to /v1)", &d.base_url)?,
                model: p.text("Model", &d.model)?,
                api_key: p.secret("API key (empty for none, e.g. Ollama)")?,
            }
        }
        _ => {
            let api_key = loop {
                match p.secret("Anthropic API key")? {
                    Some(k) => break k,
                    None => eprintln!("the anthropic provider needs a key"),
                }
            };
            Provider::Anthropic {
                model: p.text(
                    "Model",
                    &moltbot_core::config::AnthropicConfig::default().model,
                )?,
                api_key,
            }
        }
    };
    let telegram_token = if p.yes_no("Connect a Telegram bot?", false)? {
        loop {
            match p.secret("Telegram bot token (from @BotFather)")? {
                Some(t) => break Some(t),
                None => eprintln!("a token is needed to connect Telegram"),
            }
        }
    } else {
        None
    };
    let whatsapp = if p.yes_no("Connect WhatsApp (Cloud API)?", false)? {
        let required = |p: &mut Prompter<'_>, q: &str| loop {
            if let Some(v) = p.secret(q)? {
                break anyhow::Ok(v);
            }
            eprintln!("required for WhatsApp");
        };
        let access_token = required(p, "WhatsApp access token")?;
        let phone_number_id = loop {
            let id = p.text("Phone number id (not the number)", "")?;
            if !id.is_empty() {
                break id;
            }
        };
        Some(WhatsApp {
            access_token,
            phone_number_id,
            verify_token: required(p, "Webhook verify token")?,
            app_secret: required(p, "App secret (webhook signatures)")?,
        })
    } else {
        None
    };
    let defaults = moltbot_core::config::GatewayConfig::default();
    let port: u16 = p.parsed("Gateway port", &defaults.port.to_string())?;
    let bind: IpAddr = p.parsed("Bind address", &defaults.bind.to_string())?;
    let token = loop {
        if p.yes_no("Generate a gateway access token?", true)? {
            break Some(generate_token()?);
        }
        if bind.is_loopback() {
            break None;
        }
        eprintln!("binding to {bind} needs a token: anyone on the network could use the gateway");
    };
    let data_dir = p.text("Data folder", "~/.moltbot")?;
    let data_dir = (data_dir != "~/.moltbot").then(|| PathBuf::from(data_dir));
    Ok(Answers {
        provider,
        telegram_token,
        whatsapp,
        port,
        bind,
        token,
        data_dir,
    })
}

/// 32 random bytes from the OS, hex-encoded.
pub fn generate_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the gateway token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The config file: a header comment and only the keys that differ from the defaults.
/// (`Config` itself cannot be serialised for this: secrets serialise as `***`.)
pub fn render_config(a: &Answers) -> anyhow::Result<String> {
    use toml::{Table, Value};
    fn section<'a>(root: &'a mut Table, path: &[&str]) -> &'a mut Table {
        let mut t = root;
        for key in path {
            t = t
                .entry(key.to_string())
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                // Only this function inserts, and only tables, under these keys.
                .expect("a table");
        }
        t
    }
    let s = |v: &str| Value::String(v.to_string());
    let mut root = Table::new();
    let d = moltbot_core::config::GatewayConfig::default();
    if a.bind != d.bind {
        section(&mut root, &["gateway"]).insert("bind".into(), s(&a.bind.to_string()));
    }
    if a.port != d.port {
        section(&mut root, &["gateway"]).insert("port".into(), Value::Integer(a.port.into()));
    }
    if let Some(t) = &a.token {
        section(&mut root, &["gateway"]).insert("token".into(), s(t));
    }
    if let Some(dir) = &a.data_dir {
        let dir = dir.to_str().context("the data folder path is not UTF-8")?;
        section(&mut root, &["data"]).insert("dir".into(), s(dir));
    }
    match &a.provider {
        Provider::Local => {}
        Provider::OpenAi {
            base_url,
            model,
            api_key,
        } => {
            section(&mut root, &["model"])
                .insert("providers".into(), Value::Array(vec![s("openai")]));
            let o = section(&mut root, &["model", "openai"]);
            o.insert("base_url".into(), s(base_url));
            o.insert("model".into(), s(model));
            if let Some(k) = api_key {
                o.insert("api_key".into(), s(k));
            }
        }
        Provider::Anthropic { model, api_key } => {
            section(&mut root, &["model"])
                .insert("providers".into(), Value::Array(vec![s("anthropic")]));
            let o = section(&mut root, &["model", "anthropic"]);
            o.insert("model".into(), s(model));
            o.insert("api_key".into(), s(api_key));
        }
    }
    if let Some(t) = &a.telegram_token {
        let tg = section(&mut root, &["channels", "telegram"]);
        tg.insert("enabled".into(), Value::Boolean(true));
        tg.insert("bot_token".into(), s(t));
    }
    if let Some(w) = &a.whatsapp {
        let wa = section(&mut root, &["channels", "whatsapp"]);
        wa.insert("enabled".into(), Value::Boolean(true));
        wa.insert("access_token".into(), s(&w.access_token));
        wa.insert("phone_number_id".into(), s(&w.phone_number_id));
        wa.insert("verify_token".into(), s(&w.verify_token));
        wa.insert("app_secret".into(), s(&w.app_secret));
    }
    Ok(format!(
        "# Written by `moltbot onboard`. Only values that differ from the defaults are set;\n\
         # `moltbot config init --config other.toml` writes every key with comments.\n\
         # This file holds secrets: keep it readable by you only (mode 0600).\n\n{}",
        toml::to_string(&root)?
    ))
}

/// Write `text` to a private temporary file next to `path`, check that it loads and is safe
/// to serve, then move it into place.
fn write_checked(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("toml.onboard-tmp");
    super::config::write_private(&tmp, text)
        .with_context(|| format!("writing {}", tmp.display()))?;
    // The file alone, not the caller's MOLTBOT_* environment, must make a valid config.
    let checked = Config::load_with_env(Some(&tmp), &[])
        .map_err(anyhow::Error::from)
        .and_then(|c| Ok(c.check_bind_safety()?));
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context("the answers do not make a valid config; nothing was written"));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn print_next_steps(path: &Path, explicit_config: bool, a: &Answers, installing: bool) {
    let cfg_flag = if explicit_config {
        format!(" --config {}", path.display())
    } else {
        String::new()
    };
    let host = if a.bind.is_unspecified() {
        "127.0.0.1".to_string()
    } else if a.bind.is_ipv6() {
        format!("[{}]", a.bind)
    } else {
        a.bind.to_string()
    };
    outln!("wrote {} (mode 0600: it holds secrets)", path.display());
    let provider = match &a.provider {
        Provider::Local => "local (embedded model)".to_string(),
        Provider::OpenAi {
            base_url, model, ..
        } => format!("openai-compatible {base_url}, model {model}"),
        Provider::Anthropic { model, .. } => format!("anthropic, model {model}"),
    };
    outln!("model:   {provider}");
    outln!("gateway: http://{host}:{}", a.port);
    if a.token.is_some() {
        outln!(
            "token:   generated and stored as gateway.token in the config \
             (`moltbot chat` and the other commands read it from there)"
        );
    }
    outln!("\nnext steps:");
    outln!("  moltbot{cfg_flag} doctor            check the setup");
    if a.provider == Provider::Local {
        outln!("  moltbot{cfg_flag} models fetch      download the embedded model now (else on first start)");
    }
    if !installing {
        outln!("  moltbot{cfg_flag} gateway           run in the foreground, or");
        outln!("  moltbot{cfg_flag} daemon install    run as a background service");
    }
    outln!("  moltbot{cfg_flag} chat              talk to it");
    if a.telegram_token.is_some() || a.whatsapp.is_some() {
        outln!(
            "  moltbot{cfg_flag} pairing list      approve the first people who write to the bot"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers() -> Answers {
        Answers {
            provider: Provider::Local,
            telegram_token: None,
            whatsapp: None,
            port: 18789,
            bind: IpAddr::from([127, 0, 0, 1]),
            token: None,
            data_dir: None,
        }
    }

    fn load(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Config::load_with_env(Some(&p), &[]).unwrap()
    }

    #[test]
    fn defaults_render_to_an_empty_config() {
        let text = render_config(&answers()).unwrap();
        assert!(
            text.lines().all(|l| l.starts_with('#') || l.is_empty()),
            "{text}"
        );
        assert_eq!(load(&text), Config::default());
    }

    #[test]
    fn every_answer_lands_in_the_config() {
        let a = Answers {
            provider: Provider::Anthropic {
                model: "claude-x".into(),
                api_key: "sk-ant-1".into(),
            },
            telegram_token: Some("123:abc".into()),
            whatsapp: Some(WhatsApp {
                access_token: "EAA".into(),
                phone_number_id: "42".into(),
                verify_token: "v".into(),
                app_secret: "s".into(),
            }),
            port: 1234,
            bind: IpAddr::from([0, 0, 0, 0]),
            token: Some(generate_token().unwrap()),
            data_dir: Some("/srv/moltbot".into()),
        };
        let cfg = load(&render_config(&a).unwrap());
        cfg.check_bind_safety().unwrap();
        assert_eq!(cfg.gateway.port, 1234);
        assert_eq!(cfg.gateway.token.unwrap().expose(), a.token.unwrap());
        assert_eq!(cfg.model.anthropic.api_key.unwrap().expose(), "sk-ant-1");
        assert_eq!(cfg.model.anthropic.model, "claude-x");
        assert!(cfg.channels.telegram.enabled && cfg.channels.whatsapp.enabled);
        assert_eq!(cfg.channels.whatsapp.phone_number_id, "42");
        assert_eq!(cfg.data.dir.unwrap(), PathBuf::from("/srv/moltbot"));
    }

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let a = generate_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, generate_token().unwrap());
    }

    #[test]
    fn the_wizard_reasks_on_a_bad_answer() {
        let input = "9\nopenai\n\n\n\nn\nn\nnot-a-port\n80\n\nn\n/data\n";
        let mut p = Prompter::new(input.as_bytes());
        let a = wizard(&mut p).unwrap();
        assert_eq!(a.port, 80);
        assert_eq!(a.token, None);
        assert_eq!(a.data_dir, Some(PathBuf::from("/data")));
        assert!(matches!(a.provider, Provider::OpenAi { api_key: None, .. }));
        // Running out of input is an error, not a default.
        let mut p = Prompter::new("".as_bytes());
        assert!(wizard(&mut p).is_err());
    }
}
