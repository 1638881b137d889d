//! k-NN benchmark of our HNSW on an fvecs dataset, printing one JSON line per `ef`.
//!
//! Driven by `bench/knn/run.sh`, which prepares the files and runs faiss and hnswlib with
//! the same parameters in the same run. Usage:
//!
//! ```text
//! knn_bench --dataset NAME --base base.fvecs --queries queries.fvecs --gt gt.ivecs \
//!           [--metric ip|l2] [--m 16] [--ef-construction 200] [--ef 16,32,64,128] [--n N]
//!           [--index PATH]   (load PATH if it exists, else build and save there)
//! ```

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use moltbot_knowledge::{Hnsw, HnswParams, Metric, VectorIndex};

fn main() {
    if let Err(e) = run() {
        eprintln!("knn_bench: {e}");
        std::process::exit(1);
    }
}

fn read_vecs<T>(path: &str, conv: impl Fn([u8; 4]) -> T) -> Result<(usize, Vec<T>), String> {
    let mut data = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    if data.len() < 4 {
        return Err(format!("{path} is empty"));
    }
    let dim = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let rec = 4 + 4 * dim;
    if dim == 0 || data.len() % rec != 0 {
        return Err(format!(
            "{path}: size {} is not a multiple of {rec}",
            data.len()
        ));
    }
    let mut out = Vec::with_capacity(data.len() / rec * dim);
    for r in data.chunks_exact(rec) {
        out.extend(
            r[4..]
                .chunks_exact(4)
                .map(|c| conv([c[0], c[1], c[2], c[3]])),
        );
    }
    Ok((dim, out))
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn run() -> Result<(), String> {
    let mut args: HashMap<String, String> = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let key = k.trim_start_matches("--").to_string();
        let v = it.next().ok_or_else(|| format!("flag {k} needs a value"))?;
        args.insert(key, v);
    }
    let get = |k: &str| args.get(k).cloned().ok_or_else(|| format!("missing --{k}"));
    let num = |k: &str, d: usize| -> Result<usize, String> {
        args.get(k).map_or(Ok(d), |v| {
            v.parse().map_err(|_| format!("--{k}: not a number: {v}"))
        })
    };
    let dataset = get("dataset")?;
    let metric = match args.get("metric").map(String::as_str) {
        None | Some("ip") => Metric::InnerProduct,
        Some("l2") => Metric::L2,
        Some(o) => return Err(format!("--metric must be ip or l2, got {o}")),
    };
    let m = num("m", 16)?;
    let efc = num("ef-construction", 200)?;
    let efs: Vec<usize> = args
        .get("ef")
        .map_or("16,32,64,128,256", String::as_str)
        .split(',')
        .map(|s| s.parse().map_err(|_| format!("--ef: bad value {s}")))
        .collect::<Result<_, _>>()?;
    let k = 10;

    let (dim, mut base) = read_vecs(&get("base")?, f32::from_le_bytes)?;
    if let Some(n) = args.get("n") {
        let n: usize = n.parse().map_err(|_| "--n: not a number".to_string())?;
        base.truncate(n * dim);
    }
    let n = base.len() / dim;
    let (qdim, queries) = read_vecs(&get("queries")?, f32::from_le_bytes)?;
    if qdim != dim {
        return Err(format!("query dim {qdim} != base dim {dim}"));
    }
    let (gk, gt) = read_vecs(&get("gt")?, u32::from_le_bytes)?;
    let nq = queries.len() / dim;
    if gt.len() / gk != nq || gk < k {
        return Err(format!(
            "ground truth holds {} rows of {gk}, need {nq} of >= {k}",
            gt.len() / gk
        ));
    }

    let params = HnswParams {
        m,
        ef_construction: efc,
        ..HnswParams::default()
    };
    // `--index PATH` reuses a saved index (for tuning the search without rebuilding).
    let cached = args.get("index").map(PathBuf::from);
    let rss0 = rss_mb();
    let t = Instant::now();
    let (index, build_s) = match cached.as_ref().filter(|p| p.exists()) {
        Some(p) => (Hnsw::load(p).map_err(|e| e.to_string())?, -1.0),
        None => {
            let mut index = Hnsw::new(dim, metric, params).map_err(|e| e.to_string())?;
            let ids: Vec<u64> = (0..n as u64).collect();
            index.insert_batch(&ids, &base).map_err(|e| e.to_string())?;
            (index, t.elapsed().as_secs_f64())
        }
    };
    let mem_mb = rss_mb() - rss0;
    drop(base);

    // Reload time: save then load the file, as a restart would.
    let path = cached.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("knn_bench_{}.hnsw", std::process::id()))
    });
    let t = Instant::now();
    index.save(&path).map_err(|e| e.to_string())?;
    let save_s = t.elapsed().as_secs_f64();
    let memory_bytes = index.memory_bytes();
    drop(index);
    let t = Instant::now();
    let index = Hnsw::load(&path).map_err(|e| e.to_string())?;
    let load_s = t.elapsed().as_secs_f64();
    let file_mb = std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64 / 1e6);
    if !args.contains_key("index") {
        let _ = std::fs::remove_file(&path);
    }

    for ef in efs {
        let mut lat = Vec::with_capacity(nq);
        let mut hits = 0usize;
        let t = Instant::now();
        for (qi, q) in queries.chunks_exact(dim).enumerate() {
            let t0 = Instant::now();
            let res = index
                .search(q, k, Some(ef), None)
                .map_err(|e| e.to_string())?;
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
            let truth = &gt[qi * gk..qi * gk + k];
            hits += res
                .iter()
                .filter(|(id, _)| truth.contains(&(*id as u32)))
                .count();
        }
        let total = t.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "{{\"library\":\"moltbot-hnsw\",\"dataset\":\"{dataset}\",\"n\":{n},\"dim\":{dim},\"m\":{m},\"ef_construction\":{efc},\"ef\":{ef},\"build_s\":{build_s:.2},\"memory_mb\":{mem_mb:.1},\"index_mb\":{:.1},\"qps\":{:.0},\"recall_at_10\":{:.4},\"p50_ms\":{:.4},\"p99_ms\":{:.4},\"save_s\":{save_s:.2},\"load_s\":{load_s:.2},\"file_mb\":{file_mb:.1}}}",
            memory_bytes as f64 / 1e6,
            nq as f64 / total,
            hits as f64 / (nq * k) as f64,
            pct(0.5),
            pct(0.99),
        );
    }
    Ok(())
}
