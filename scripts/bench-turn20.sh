#!/usr/bin/env bash
# Turn 20 of a conversation after a chosen sequence of earlier load, on this gateway and on
# llama.cpp's llama-server side by side (same GGUF, threads, slots and cells as
# scripts/bench-serving.sh), to find which earlier load slows a later conversation down.
#   scripts/bench-turn20.sh PHASE...   phases, run in order on both servers:
#     burst   32 requests at concurrency 16, 32 tokens each
#     prefix  8 requests under the 1.4k-token system prompt (bench/serving/system-prompt.txt)
#     c4      throughput at concurrency 4 (16 requests, 64 tokens); repeat it to alternate
#     multi   one 20-turn conversation, 32 tokens per turn (prints a JSON line per server)
# Example: scripts/bench-turn20.sh multi burst prefix multi
# Needs the release build (`cargo build --release -p moltbot --bin moltbot --bin moltbot-bench`)
# and the reference from scripts/build-llama-bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moltbot/target}
MODEL=${MOLTBOT_TEST_MODEL:-$HOME/.cache/moltbot/data/models/SmolLM2-135M-Instruct.Q4_1.gguf}
BIN=$CARGO_TARGET_DIR/release/moltbot
BENCH=$CARGO_TARGET_DIR/release/moltbot-bench
REF=$(bash scripts/build-llama-bench.sh)
OURS=18941
THEIRS=18942
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
: >"$WORK/none.toml"
MOLTBOT_CONFIG=$WORK/none.toml MOLTBOT_DATA__DIR=$WORK/data MOLTBOT_LOG__LEVEL=warn \
MOLTBOT_MODEL__PROVIDERS='["local"]' MOLTBOT_MODEL__LOCAL__PATH="$MODEL" \
MOLTBOT_MODEL__LOCAL__THREADS=2 MOLTBOT_MODEL__LOCAL__PARALLEL=16 \
MOLTBOT_MODEL__LOCAL__KV_CACHE_TOKENS=16384 MOLTBOT_GATEWAY__MAX_CONCURRENT_TURNS=1024 \
MOLTBOT_UNDERSTANDING__ENABLED=false MOLTBOT_KNOWLEDGE__ENABLED=false \
MOLTBOT_MODEL__FILTER__ENABLED=false \
  "$BIN" gateway --port $OURS >"$WORK/moltbot.log" 2>&1 &
pids+=($!)
"$REF/llama-server" -m "$MODEL" -t 2 -tb 2 -c 16384 -np 16 --kv-unified -b 512 -ub 512 \
  --host 127.0.0.1 --port $THEIRS >"$WORK/llama.log" 2>&1 &
pids+=($!)
for port in $OURS $THEIRS; do
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done
done
# The model loads in the background: wait until a request is answered.
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$OURS/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":1}' >/dev/null 2>&1 && break
  sleep 0.2
done
gen() { "$BENCH" generate --json "$@"; }
for phase in "$@"; do
  for port in $OURS $THEIRS; do
    label=$([ $port = $OURS ] && echo moltbot || echo llama-server)
    url=http://127.0.0.1:$port
    case $phase in
      burst) gen --scenario throughput --url $url --label $label --concurrency 16 --requests 32 \
               --max-tokens 32 >/dev/null;;
      prefix) gen --scenario prefix --url $url --label $label \
                --system-file bench/serving/system-prompt.txt --requests 8 >/dev/null;;
      c4) gen --scenario throughput --url $url --label $label --concurrency 4 --requests 16 \
            --max-tokens 64;;
      multi) gen --scenario multiturn --url $url --label $label --turns 20 --max-tokens 32;;
      *) echo "unknown phase $phase (burst|prefix|c4|multi)" >&2; exit 2;;
    esac
  done
done
