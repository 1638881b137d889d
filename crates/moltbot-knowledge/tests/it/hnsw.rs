//! HNSW against the brute-force oracle; persistence; concurrency.

use std::collections::HashSet;
use std::sync::Arc;

use moltbot_knowledge::{BruteForce, Hnsw, HnswParams, Metric, VectorIndex};
use proptest::prelude::*;

use crate::support::{clustered, Rng};

fn build(dim: usize, metric: Metric, data: &[f32], params: HnswParams) -> (Hnsw, BruteForce) {
    let mut h = Hnsw::new(dim, metric, params).expect("valid params");
    let mut b = BruteForce::new(dim, metric).expect("valid dim");
    let ids: Vec<u64> = (0..(data.len() / dim) as u64).map(|i| i * 3 + 1).collect();
    h.insert_batch(&ids, data).expect("insert");
    for (id, v) in ids.iter().zip(data.chunks_exact(dim)) {
        b.insert(*id, v).expect("insert");
    }
    (h, b)
}

fn recall(h: &dyn VectorIndex, b: &dyn VectorIndex, queries: &[f32], dim: usize, ef: usize) -> f64 {
    let (mut hit, mut total) = (0usize, 0usize);
    for q in queries.chunks_exact(dim) {
        let truth: HashSet<u64> = b
            .search(q, 10, None, None)
            .expect("search")
            .into_iter()
            .map(|r| r.0)
            .collect();
        let got = h.search(q, 10, Some(ef), None).expect("search");
        hit += got.iter().filter(|r| truth.contains(&r.0)).count();
        total += truth.len();
    }
    hit as f64 / total.max(1) as f64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Recall@10 against brute force stays at or above 0.95 with ef = 80, for both metrics,
    /// and tombstoned ids never come back.
    #[test]
    fn hnsw_matches_brute_force(
        seed in any::<u64>(),
        n in 300usize..1500,
        dim in 3usize..40,
        l2 in any::<bool>(),
        m in 6usize..20,
    ) {
        let metric = if l2 { Metric::L2 } else { Metric::InnerProduct };
        let mut rng = Rng::new(seed);
        // Queries come from the same clusters as the data, as questions come from the same
        // topics as the documents; queries from unrelated clusters are a harder workload on
        // which hnswlib itself dips to about 0.96 at ef = 80.
        let mut data = clustered(&mut rng, n + 40, dim, 8);
        let queries = data.split_off(n * dim);
        let params = HnswParams { m, ef_construction: 100, seed, ..HnswParams::default() };
        let (mut h, mut b) = build(dim, metric, &data, params);
        let r = recall(&h, &b, &queries, dim, 80);
        prop_assert!(r >= 0.95, "recall {r} (n={n} dim={dim} m={m} {metric:?})");

        // Delete about a quarter of the ids, some of them twice.
        let mut gone = HashSet::new();
        for i in 0..n / 4 {
            let id = (rng.below(n) as u64) * 3 + 1;
            let was_live = !gone.contains(&id);
            prop_assert_eq!(h.remove(id), was_live, "remove #{} of {}", i, id);
            prop_assert_eq!(b.remove(id), was_live);
            gone.insert(id);
        }
        prop_assert_eq!(h.len(), b.len());
        for q in queries.chunks_exact(dim) {
            let got = h.search(q, 10, Some(80), None).expect("search");
            prop_assert_eq!(got.len(), 10.min(b.len()));
            for (id, _) in &got {
                prop_assert!(!gone.contains(id), "deleted id {} returned", id);
            }
        }
        let r = recall(&h, &b, &queries, dim, 80);
        prop_assert!(r >= 0.95, "recall after deletes {r}");
    }
}

#[test]
fn filter_is_respected_and_exact_when_selective() {
    let dim = 16;
    let mut rng = Rng::new(7);
    let data = clustered(&mut rng, 2000, dim, 10);
    let (h, b) = build(dim, Metric::InnerProduct, &data, HnswParams::default());
    let q = &data[..dim];
    // Broad filter: half the ids.
    let even = |id: u64| id.is_multiple_of(2);
    let got = h.search(q, 10, Some(100), Some(&even)).expect("search");
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|(id, _)| id.is_multiple_of(2)));
    // Very selective filter: 5 ids. The fallback must return exactly them, best first.
    let few = |id: u64| id % 997 == 1;
    let got = h.search(q, 10, None, Some(&few)).expect("search");
    let want = b.search(q, 10, None, Some(&few)).expect("search");
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        want.iter().map(|r| r.0).collect::<Vec<_>>()
    );
}

#[test]
fn replace_compact_and_errors() {
    let dim = 8;
    let mut h = Hnsw::new(dim, Metric::InnerProduct, HnswParams::default()).expect("new");
    assert!(h
        .search(&[0.0; 8], 5, None, None)
        .expect("empty")
        .is_empty());
    let err = h.insert(1, &[1.0; 7]).expect_err("short vector");
    assert_eq!(err.kind(), "index_dim_mismatch");
    assert!(
        err.to_string().contains("8") && err.to_string().contains("7"),
        "{err}"
    );
    let err = h.insert(1, &[f32::NAN; 8]).expect_err("nan");
    assert_eq!(err.kind(), "index_non_finite");
    let err = Hnsw::new(
        8,
        Metric::L2,
        HnswParams {
            m: 1,
            ..HnswParams::default()
        },
    )
    .expect_err("m");
    assert!(err.to_string().contains("`m`"), "{err}");

    let mut rng = Rng::new(3);
    let data = clustered(&mut rng, 500, dim, 4);
    let ids: Vec<u64> = (0..500).collect();
    h.insert_batch(&ids, &data).expect("batch");
    // Re-inserting an id replaces it.
    let mut v = vec![0.0f32; dim];
    v[0] = 1.0;
    h.insert(42, &v).expect("replace");
    assert_eq!(h.len(), 500);
    assert_eq!(h.vector(42).expect("present"), &v[..]);
    let top = h.search(&v, 1, None, None).expect("search");
    assert_eq!(top[0].0, 42);
    // Deleting past the compaction threshold rebuilds the graph without tombstones.
    for id in 0..200 {
        h.remove(id);
    }
    assert_eq!(h.len(), 300);
    assert!(
        h.deleted_count() < 100,
        "compaction ran: {}",
        h.deleted_count()
    );
    h.compact();
    assert_eq!(h.deleted_count(), 0);
    assert_eq!(h.node_count(), 300);
    let got = h
        .search(&data[300 * dim..301 * dim], 1, None, None)
        .expect("search");
    assert_eq!(got[0].0, 300);
}

#[test]
fn save_load_round_trip_gives_identical_results() {
    let dim = 24;
    let mut rng = Rng::new(11);
    let data = clustered(&mut rng, 1500, dim, 6);
    let (mut h, _) = build(dim, Metric::L2, &data, HnswParams::default());
    for id in [1u64, 4, 7, 100] {
        h.remove(id);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.hnsw");
    h.save(&path).expect("save");
    let g = Hnsw::load(&path).expect("load");
    assert_eq!(g.len(), h.len());
    assert_eq!(g.params(), h.params());
    for q in data.chunks_exact(dim).take(50) {
        assert_eq!(
            h.search(q, 10, Some(50), None).expect("a"),
            g.search(q, 10, Some(50), None).expect("b")
        );
    }
    // The brute-force index round-trips too.
    let mut b = BruteForce::new(dim, Metric::L2).expect("new");
    b.insert(5, &data[..dim]).expect("insert");
    let bp = dir.path().join("b.flat");
    b.save(&bp).expect("save");
    let b2 = BruteForce::load(&bp).expect("load");
    assert_eq!(b2.search(&data[..dim], 1, None, None).expect("s")[0].0, 5);
}

#[test]
fn corrupt_or_truncated_files_give_clear_errors() {
    let dim = 8;
    let mut rng = Rng::new(5);
    let data = clustered(&mut rng, 300, dim, 3);
    let (h, _) = build(dim, Metric::InnerProduct, &data, HnswParams::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("i.hnsw");
    h.save(&path).expect("save");
    let good = std::fs::read(&path).expect("read");

    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    std::fs::write(&path, &flipped).expect("write");
    let e = Hnsw::load(&path).expect_err("flipped");
    assert_eq!(e.kind(), "index_corrupt");
    assert!(e.to_string().contains("checksum"), "{e}");
    assert!(e.to_string().contains("i.hnsw"), "{e}");

    std::fs::write(&path, &good[..good.len() - 100]).expect("write");
    let e = Hnsw::load(&path).expect_err("truncated");
    assert!(e.to_string().contains("truncated"), "{e}");

    std::fs::write(&path, b"not an index at all, just some text").expect("write");
    let e = Hnsw::load(&path).expect_err("magic");
    assert!(e.to_string().contains("magic"), "{e}");

    let e = Hnsw::load(&dir.path().join("missing.hnsw")).expect_err("missing");
    assert_eq!(e.kind(), "index_io");
}

#[test]
fn concurrent_searches_agree_with_sequential_ones() {
    let dim = 32;
    let mut rng = Rng::new(9);
    let data = clustered(&mut rng, 3000, dim, 12);
    let (h, _) = build(dim, Metric::InnerProduct, &data, HnswParams::default());
    let h = Arc::new(h);
    let queries: Vec<Vec<f32>> = data
        .chunks_exact(dim)
        .step_by(37)
        .map(<[f32]>::to_vec)
        .collect();
    let expected: Vec<_> = queries
        .iter()
        .map(|q| h.search(q, 10, None, None).expect("search"))
        .collect();
    let queries = Arc::new(queries);
    let expected = Arc::new(expected);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (h, q, e) = (h.clone(), queries.clone(), expected.clone());
            std::thread::spawn(move || {
                for (q, e) in q.iter().zip(e.iter()) {
                    assert_eq!(&h.search(q, 10, None, None).expect("search"), e);
                }
            })
        })
        .collect();
    for t in handles {
        t.join().expect("thread");
    }
}
