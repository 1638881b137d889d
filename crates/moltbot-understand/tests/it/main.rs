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
    match std::env::var_os("MOLTBOT_TEST_ENCODER").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var_os("CI").is_some() => {
            panic!("MOLTBOT_TEST_ENCODER must name the encoder folder in CI")
        }
        None => {
            eprintln!("MOLTBOT_TEST_ENCODER is not set; skipping a test that needs the encoder");
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
