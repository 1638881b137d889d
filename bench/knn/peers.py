"""Build and query faiss IndexHNSWFlat and hnswlib on a prepared dataset.

Same M / efConstruction / ef list as the Rust run; build uses --build-threads threads,
queries run on 1 thread. QPS is measured with one batched call over all queries (no Python
overhead per query); p50/p99 come from a second pass of one call per query, so they include
a few microseconds of Python call overhead. Prints one JSON line per (library, ef).
"""
import argparse
import json
import os
import time

import numpy as np


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=dtype)
    d = raw[:1].view(np.int32)[0]
    return np.ascontiguousarray(raw.reshape(-1, d + 1)[:, 1:])


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def recall(found, gt, k=10):
    hits = sum(len(set(f[:k]) & set(g[:k])) for f, g in zip(found, gt))
    return hits / (len(gt) * k)


def measure(lib, search_batch, search_one, queries, gt, efs, set_ef, common):
    for ef in efs:
        set_ef(ef)
        t = time.perf_counter()
        found = search_batch(queries)
        total = time.perf_counter() - t
        lat = []
        for q in queries:
            t0 = time.perf_counter()
            search_one(q[None, :])
            lat.append((time.perf_counter() - t0) * 1e3)
        lat.sort()
        row = dict(common, library=lib, ef=ef, qps=round(len(queries) / total),
                   recall_at_10=round(recall(found, gt), 4),
                   p50_ms=round(lat[int(0.5 * (len(lat) - 1))], 4),
                   p99_ms=round(lat[int(round(0.99 * (len(lat) - 1)))], 4))
        print(json.dumps(row), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef", default="16,32,64,128,256")
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--libs", default="faiss,hnswlib")
    ap.add_argument("--faiss-index", help="load this faiss index if it exists, else build and "
                    "save it there (for repeated search runs; build_s is then the load time)")
    a = ap.parse_args()
    efs = [int(x) for x in a.ef.split(",")]
    base = read_vecs(os.path.join(a.dir, "base.fvecs"), np.float32)
    queries = read_vecs(os.path.join(a.dir, "queries.fvecs"), np.float32)
    gt = read_vecs(os.path.join(a.dir, "gt.ivecs"), np.int32)
    n, d = base.shape
    k = 10

    if "faiss" in a.libs:
        import faiss

        faiss.omp_set_num_threads(a.build_threads)
        rss0 = rss_mb()
        t = time.perf_counter()
        if a.faiss_index and os.path.exists(a.faiss_index):
            index = faiss.read_index(a.faiss_index)
        else:
            index = faiss.IndexHNSWFlat(int(d), a.m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = a.ef_construction
            index.add(base)
            if a.faiss_index:
                faiss.write_index(index, a.faiss_index)
        build_s = time.perf_counter() - t
        common = dict(dataset=a.dataset, n=n, dim=int(d), m=a.m, ef_construction=a.ef_construction,
                      build_s=round(build_s, 2), memory_mb=round(rss_mb() - rss0, 1))
        faiss.omp_set_num_threads(1)

        def set_ef(ef):
            index.hnsw.efSearch = ef

        measure("faiss-hnsw", lambda q: index.search(q, k)[1], lambda q: index.search(q, k),
                queries, gt, efs, set_ef, common)
        del index

    if "hnswlib" in a.libs:
        import hnswlib

        rss0 = rss_mb()
        t = time.perf_counter()
        p = hnswlib.Index(space="ip", dim=int(d))
        p.init_index(max_elements=n, ef_construction=a.ef_construction, M=a.m, random_seed=100)
        p.set_num_threads(a.build_threads)
        p.add_items(base, np.arange(n))
        build_s = time.perf_counter() - t
        common = dict(dataset=a.dataset, n=n, dim=int(d), m=a.m, ef_construction=a.ef_construction,
                      build_s=round(build_s, 2), memory_mb=round(rss_mb() - rss0, 1))
        p.set_num_threads(1)

        def set_ef(ef):
            p.set_ef(max(ef, k))

        measure("hnswlib", lambda q: p.knn_query(q, k=k)[0], lambda q: p.knn_query(q, k=k),
                queries, gt, efs, set_ef, common)


if __name__ == "__main__":
    main()
