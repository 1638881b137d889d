#!/usr/bin/env bash
# The embedded model's speed beside llama.cpp's own llama-bench, same GGUF file, same thread
# counts, in one run. Usage: scripts/bench-local.sh [GGUF]. Prompt 381 tokens, 128 decoded.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moltbot/target}
MODEL=${1:-${MOLTBOT_TEST_MODEL:-$HOME/.cache/moltbot/data/models/SmolLM2-135M-Instruct.Q4_1.gguf}}
REF=$(bash scripts/build-llama-bench.sh)
cargo build --release --locked -p moltbot-models --example local_speed >&2
for t in 1 2; do
  echo "## threads=$t"
  echo "### llama.cpp llama-bench"
  "$REF/llama-bench" -m "$MODEL" -t "$t" -p 381 -n 128 -r 3 -o md 2>/dev/null | grep -E "^\| (model|smollm|llama)" || true
  echo "### moltbot (llama-cpp-2 in process)"
  "$CARGO_TARGET_DIR/release/examples/local_speed" "$MODEL" "$t" 128
done
