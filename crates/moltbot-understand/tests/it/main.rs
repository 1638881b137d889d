//! Integration tests of understanding with the real all-MiniLM-L6-v2 weights.
//!
//! `MOLTBOT_TEST_ENCODER` names the model folder (`scripts/test.sh` fetches it with
//! `moltbot models fetch`). Without it the encoder tests are skipped locally and fail in CI.

mod encoder;
mod exit;
mod model;
mod tune;

use moltbot_understand::{MiniLm, Precision};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

pub fn encoder_dir() -> Option<PathBuf> {
    env_dir("MOLTBOT_TEST_ENCODER", "the encoder folder")
}

/// The folder the environment variable `var` names; in CI its absence is a failure, outside
/// CI the test that needs it is skipped.
pub fn env_dir(var: &str, what: &str) -> Option<PathBuf> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var_os("CI").is_some() => panic!("{var} must name {what} in CI"),
        None => {
            eprintln!("{var} is not set; skipping a test that needs {what}");
            None
        }
    }
}

/// One f32 encoder shared by the tests of this binary (loading takes ~0.3 s).
pub fn f32_encoder() -> Option<Arc<MiniLm>> {
    static ENC: OnceLock<Option<Arc<MiniLm>>> = OnceLock::new();
    ENC.get_or_init(|| {
        encoder_dir().map(|d| Arc::new(MiniLm::load(&d, Precision::F32).expect("load the encoder")))
    })
    .clone()
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
