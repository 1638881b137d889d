//! Deploy checks: the Helm chart rendered and validated against Kubernetes types, the
//! production compose file, the Dockerfile, and the Grafana dashboard and Prometheus alerts
//! against the metrics a real gateway exports. `nginx -t` and `promtool` run from
//! scripts/check-deploy.sh.

mod compose;
mod helm;
mod metrics;
mod unsafe_code;

use std::path::{Path, PathBuf};

/// The repository root (two levels above this crate).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate sits in crates/ of the repository")
        .to_path_buf()
}

pub fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
