//! The environment snapshot: what machine we run on. Shown by `/health` and `doctor`, and
//! used to pick the local model's thread count.

use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct EnvSnapshot {
    pub os: String,
    pub os_version: Option<String>,
    pub kernel: Option<String>,
    pub arch: &'static str,
    pub hostname: Option<String>,
    pub cpu_brand: String,
    /// Logical CPUs the process may use.
    pub cpu_count: usize,
    pub physical_cores: Option<usize>,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    /// Free space on the disk that holds the data dir.
    pub disk_free_bytes: Option<u64>,
    /// GPUs found (NVIDIA through `/proc/driver/nvidia`); empty on CPU-only hosts.
    pub gpus: Vec<String>,
}

impl EnvSnapshot {
    /// Take a snapshot. Costs a few milliseconds (reads /proc); call at start-up or on demand.
    pub fn capture(data_dir: &Path) -> EnvSnapshot {
        use sysinfo::{CpuRefreshKind, Disks, MemoryRefreshKind, RefreshKind, System};
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_memory(MemoryRefreshKind::everything())
                .with_cpu(CpuRefreshKind::nothing()),
        );
        let cpu_count = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cpu_brand = sys
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_string())
            .unwrap_or_default();
        let disks = Disks::new_with_refreshed_list();
        // The disk whose mount point is the longest prefix of the data dir.
        let probe = nearest_existing(data_dir);
        let disk_free_bytes = disks
            .list()
            .iter()
            .filter(|d| probe.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len())
            .map(|d| d.available_space());
        EnvSnapshot {
            os: System::name().unwrap_or_else(|| std::env::consts::OS.to_string()),
            os_version: System::os_version(),
            kernel: System::kernel_version(),
            arch: std::env::consts::ARCH,
            hostname: System::host_name(),
            cpu_brand,
            cpu_count,
            physical_cores: System::physical_core_count(),
            memory_total_bytes: sys.total_memory(),
            memory_available_bytes: sys.available_memory(),
            disk_free_bytes,
            gpus: detect_gpus(),
        }
    }

    /// Threads for CPU inference: physical cores when known (hyper-threads do not help
    /// matrix kernels), never more than the CPUs we may use.
    pub fn inference_threads(&self) -> usize {
        self.physical_cores
            .unwrap_or(self.cpu_count)
            .clamp(1, self.cpu_count.max(1))
    }
}

fn nearest_existing(p: &Path) -> std::path::PathBuf {
    let mut cur = p.to_path_buf();
    loop {
        if cur.exists() {
            return cur.canonicalize().unwrap_or(cur);
        }
        if !cur.pop() {
            return std::path::PathBuf::from("/");
        }
    }
}

fn detect_gpus() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc/driver/nvidia/gpus") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("information")).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_this_machine() {
        let s = EnvSnapshot::capture(Path::new("/tmp/does/not/exist"));
        assert!(s.cpu_count >= 1);
        assert!(s.memory_total_bytes > 0);
        assert!(s.disk_free_bytes.is_some());
        assert!(s.inference_threads() >= 1 && s.inference_threads() <= s.cpu_count);
    }
}
