#!/usr/bin/env bash
# Serving benchmarks of the embedded model beside llama.cpp's own llama-server, same GGUF
# file, same threads, same slots, same client (`moltbot-bench generate`), in one run:
#   - throughput at 1, 4 and 16 concurrent requests (64 tokens each, greedy),
#   - time to first token under a ~1.4k-token system prompt, KV reuse on and off,
#   - latency at turn 20 of a conversation sent in full each turn, KV reuse on and off.
# The engine comparison runs with the response filter off (it holds back a short tail of
# text, which shows in the time to first token; one extra run measures that cost) and the
# intent model and knowledge store off (on a fresh data dir they fetch and unpack the encoder
# and train the built-in intents at start, which competes with the first requests).
# Usage: scripts/bench-serving.sh [GGUF]. Results: one JSON object per line on stdout and in
# $RESULTS (default ~/.cache/moltbot/bench-serving/results-DATE.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moltbot/target}
MODEL=${1:-${MOLTBOT_TEST_MODEL:-$HOME/.cache/moltbot/data/models/SmolLM2-135M-Instruct.Q4_1.gguf}}
THREADS=${THREADS:-2}
SLOTS=${SLOTS:-16}
CELLS=${CELLS:-16384}
OUT=${MOLTBOT_CACHE:-$HOME/.cache/moltbot}/bench-serving
mkdir -p "$OUT"
RESULTS=${RESULTS:-$OUT/results-$(date +%Y%m%d-%H%M%S).jsonl}
REF=$(bash scripts/build-llama-bench.sh)
cargo build --release --locked -p moltbot --bin moltbot --bin moltbot-bench >&2
BIN=$CARGO_TARGET_DIR/release/moltbot
BENCH=$CARGO_TARGET_DIR/release/moltbot-bench
SYSTEM=bench/serving/system-prompt.txt

WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

wait_ready() { # URL PATH
  for _ in $(seq 1 600); do
    curl -sf "$1$2" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server at $1 did not become ready" >&2
  return 1
}

start_moltbot() { # PORT REUSE [FILTER]
  local dir=$WORK/moltbot-$1
  mkdir -p "$dir"
  : >"$dir/none.toml"
  MOLTBOT_CONFIG=$dir/none.toml MOLTBOT_DATA__DIR=$dir/data MOLTBOT_LOG__LEVEL=warn \
  MOLTBOT_MODEL__PROVIDERS='["local"]' MOLTBOT_MODEL__LOCAL__PATH="$MODEL" \
  MOLTBOT_MODEL__LOCAL__THREADS=$THREADS MOLTBOT_MODEL__LOCAL__PARALLEL=$SLOTS \
  MOLTBOT_MODEL__LOCAL__KV_CACHE_TOKENS=$CELLS MOLTBOT_MODEL__LOCAL__REUSE_KV=$2 \
  MOLTBOT_GATEWAY__MAX_CONCURRENT_TURNS=1024 MOLTBOT_UNDERSTANDING__ENABLED=false MOLTBOT_KNOWLEDGE__ENABLED=false \
  MOLTBOT_MODEL__FILTER__ENABLED=${3:-false} \
    "$BIN" gateway --port "$1" >"$dir/log" 2>&1 &
  pids+=($!)
  wait_ready "http://127.0.0.1:$1" /health
  # The model loads in the background: wait until a request is answered.
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$1/v1/chat/completions" -H 'content-type: application/json' \
      -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":1}' >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "moltbot on $1 never answered; log:" >&2; tail -20 "$dir/log" >&2; return 1
}

start_llama() { # PORT
  "$REF/llama-server" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -c "$CELLS" -np "$SLOTS" \
    --kv-unified -b 512 -ub 512 --host 127.0.0.1 --port "$1" >"$WORK/llama-$1.log" 2>&1 &
  pids+=($!)
  wait_ready "http://127.0.0.1:$1" /health
}

gen() { "$BENCH" generate --json "$@" | tee -a "$RESULTS"; }

start_moltbot 18931 true
start_llama 18932
ours=http://127.0.0.1:18931
ref=http://127.0.0.1:18932

for c in 1 4 16; do
  n=$((c * 4 > 8 ? c * 4 : 8))
  gen --scenario throughput --url $ours --label moltbot --concurrency $c --requests $n --max-tokens 64
  gen --scenario throughput --url $ref --label llama-server --concurrency $c --requests $n --max-tokens 64
done
gen --scenario prefix --url $ours --label moltbot --system-file $SYSTEM --requests 8
gen --scenario prefix --url $ref --label llama-server --system-file $SYSTEM --requests 8
gen --scenario prefix --url $ref --label llama-server --system-file $SYSTEM --requests 8 --no-cache-prompt
gen --scenario multiturn --url $ours --label moltbot --turns 20 --max-tokens 32
gen --scenario multiturn --url $ref --label llama-server --turns 20 --max-tokens 32
gen --scenario multiturn --url $ref --label llama-server --turns 20 --max-tokens 32 --no-cache-prompt

# The same engine with KV reuse off: every prompt read in full.
start_moltbot 18933 false
off=http://127.0.0.1:18933
gen --scenario prefix --url $off --label moltbot-no-reuse --system-file $SYSTEM --requests 8 --no-cache-prompt
gen --scenario multiturn --url $off --label moltbot-no-reuse --turns 20 --max-tokens 32 --no-cache-prompt

# What the response filter costs (default config: filter on).
start_moltbot 18934 true true
filtered=http://127.0.0.1:18934
for c in 1 16; do
  n=$((c * 4 > 8 ? c * 4 : 8))
  gen --scenario throughput --url $filtered --label moltbot-filter --concurrency $c --requests $n --max-tokens 64
done
echo "results: $RESULTS" >&2
