#!/usr/bin/env bash
# Gateway benchmarks against an instant mock model (a real loopback HTTP server speaking the
# OpenAI format), all in one run so the numbers are comparable:
#   - the harness ceiling: the load generator straight against the mock model;
#   - cold start to a healthy /health and idle RSS;
#   - 1, 16 and 64 concurrent clients over /api/v1/chat (sessions persisted in SQLite),
#     and 16 over the OpenAI endpoint and the OpenClaw WebSocket;
#   - RSS after the load.
# Usage: scripts/bench-gateway.sh [TURNS_PER_CLIENT]. Release build; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
TURNS=${1:-500}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moltbot/target}
cargo build --release --locked --bin moltbot --bin moltbot-bench >&2
BIN=$CARGO_TARGET_DIR/release/moltbot
BENCH=$CARGO_TARGET_DIR/release/moltbot-bench
MOCK_PORT=18991
GW_PORT=18992
source scripts/bench-mock-env.sh

echo "## harness ceiling: load generator -> mock model directly"
"$BENCH" load --url http://127.0.0.1:$MOCK_PORT --mode openai --clients 1 --turns "$TURNS"
"$BENCH" load --url http://127.0.0.1:$MOCK_PORT --mode openai --clients 16 --turns "$TURNS"

echo "## cold start to healthy /health, idle RSS (median of 5)"
"$BENCH" startup --url http://127.0.0.1:$GW_PORT --runs 5 -- "$BIN" gateway --port $GW_PORT

"$BIN" gateway --port $GW_PORT 2>"$WORK/gw.log" &
GW=$!
pids+=($GW)
for _ in $(seq 1 100); do curl -fs http://127.0.0.1:$GW_PORT/readyz >/dev/null && break; sleep 0.05; done
rss() { awk '/VmRSS/ {printf "%.1f MB\n", $2/1024}' /proc/$GW/status; }
echo "## idle RSS of the benchmarked gateway: $(rss)"

echo "## gateway, /api/v1/chat (persisted sessions)"
for c in 1 16 64; do
  "$BENCH" load --url http://127.0.0.1:$GW_PORT --mode http --clients $c --turns "$TURNS"
done
echo "## gateway, 16 clients, other protocols"
"$BENCH" load --url http://127.0.0.1:$GW_PORT --mode openai --clients 16 --turns "$TURNS"
"$BENCH" load --url http://127.0.0.1:$GW_PORT --mode ws --clients 16 --turns "$TURNS"
sleep 6   # let the metrics upkeep drain histogram samples
echo "## RSS after the load: $(rss)"
