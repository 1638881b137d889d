//! GPU gauges when an NVIDIA GPU is present: utilization and memory per device, read with
//! `nvidia-smi` (installed with the driver) every few seconds by the metrics upkeep. On a
//! machine without it nothing is exported.
//!
//! `nvidia-smi --query-gpu` is the driver's own stable CSV interface; binding NVML directly
//! would add a dynamically loaded library for the same four numbers.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// One device's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSample {
    pub index: String,
    pub name: String,
    /// 0.0–1.0.
    pub utilization: f64,
    pub memory_used_bytes: f64,
    pub memory_total_bytes: f64,
}

const QUERY: &str = "--query-gpu=index,name,utilization.gpu,memory.used,memory.total";

/// `nvidia-smi` on `PATH`, if any.
pub fn find_nvidia_smi() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nvidia-smi"))
        .find(|p| p.is_file())
}

/// Parse `nvidia-smi`'s `csv,noheader,nounits` output (MiB, percent). Lines that do not
/// parse (`[N/A]` on some boards) are skipped.
pub fn parse(csv: &str) -> Vec<GpuSample> {
    csv.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() != 5 {
                return None;
            }
            let mib = |s: &str| s.parse::<f64>().ok().map(|v| v * 1024.0 * 1024.0);
            Some(GpuSample {
                index: f[0].to_string(),
                name: f[1].to_string(),
                utilization: f[2].parse::<f64>().ok()? / 100.0,
                memory_used_bytes: mib(f[3])?,
                memory_total_bytes: mib(f[4])?,
            })
        })
        .collect()
}

/// Run `program` and read every device; an error says why (not installed, timed out, no
/// device).
pub async fn sample(program: &Path) -> Result<Vec<GpuSample>, String> {
    let run = tokio::process::Command::new(program)
        .args([QUERY, "--format=csv,noheader,nounits"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(3), run)
        .await
        .map_err(|_| "nvidia-smi did not answer within 3 s".to_string())?
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "nvidia-smi failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

/// Set the gauges from `samples`.
pub fn record(samples: &[GpuSample]) {
    for s in samples {
        let gpu = s.index.clone();
        metrics::gauge!("moltbot_gpu_utilization_ratio", "gpu" => gpu.clone()).set(s.utilization);
        metrics::gauge!("moltbot_gpu_memory_used_bytes", "gpu" => gpu.clone())
            .set(s.memory_used_bytes);
        metrics::gauge!("moltbot_gpu_memory_total_bytes", "gpu" => gpu).set(s.memory_total_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_skips_unreadable_lines() {
        let csv = "0, NVIDIA A10, 37, 10240, 23028\n1, NVIDIA T4, [N/A], 0, 15360\n";
        let s = parse(csv);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].index, "0");
        assert_eq!(s[0].name, "NVIDIA A10");
        assert!((s[0].utilization - 0.37).abs() < 1e-9);
        assert_eq!(s[0].memory_used_bytes, 10240.0 * 1048576.0);
        assert_eq!(s[0].memory_total_bytes, 23028.0 * 1048576.0);
    }

    /// A stand-in `nvidia-smi` (a shell script answering the same query) exercises the
    /// process call, the arguments and the parse.
    #[cfg(unix)]
    #[tokio::test]
    async fn samples_through_the_program() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let smi = dir.path().join("nvidia-smi");
        std::fs::write(
            &smi,
            format!(
                "#!/bin/sh\n[ \"$1\" = \"{QUERY}\" ] && [ \"$2\" = \"--format=csv,noheader,nounits\" ] || exit 9\n\
                 echo '0, Fake GPU, 80, 2048, 8192'\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = sample(&smi).await.unwrap();
        assert_eq!(s.len(), 1);
        assert!((s[0].utilization - 0.8).abs() < 1e-9);
        assert_eq!(s[0].memory_total_bytes, 8192.0 * 1048576.0);
        let err = sample(&dir.path().join("missing")).await.unwrap_err();
        assert!(err.contains("cannot run"), "{err}");
    }
}
