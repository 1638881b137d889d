#!/usr/bin/env bash
# Two builds of the gateway, alternating rounds against the instant mock model (one node,
# mixed workloads over HTTP and WebSocket, sparse intent model): turns/s, p50/p95/p99 and
# peak RSS of each round. Made to compare allocators:
#   cargo build --release --bin moltbot && cp $CARGO_TARGET_DIR/release/moltbot /tmp/moltbot-jemalloc
#   cargo build --release -p moltbot --bin moltbot --no-default-features --features local &&
#     cp $CARGO_TARGET_DIR/release/moltbot /tmp/moltbot-glibc
#   scripts/bench-alloc.sh /tmp/moltbot-glibc /tmp/moltbot-jemalloc [ROUNDS]
# Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2 ROUNDS=${3:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moltbot/target}
BIN=$A
BENCH=${BENCH:-$CARGO_TARGET_DIR/release/moltbot-bench}
MOCK_PORT=18987
GW_PORT=18988
source scripts/bench-mock-env.sh
export MOLTBOT_UNDERSTANDING__ENCODER=none
echo "round binary turns/s p50_ms p95_ms p99_ms peak_rss_kib"
for r in $(seq 1 "$ROUNDS"); do
  for bin in "$A" "$B"; do
    rm -rf "$WORK/data"
    "$bin" gateway --port $GW_PORT 2>"$WORK/gw.log" &
    gw=$!
    for _ in $(seq 1 200); do curl -fs http://127.0.0.1:$GW_PORT/readyz >/dev/null && break; sleep 0.05; done
    out=$("$BENCH" load --url http://127.0.0.1:$GW_PORT --mode both --clients 16 --turns 150 \
      --warmup 2 --mix short:60,long:15,multi:20,batch:5 --json)
    hwm=$(awk '/VmHWM/ {print $2}' /proc/$gw/status)
    kill $gw
    wait $gw 2>/dev/null || true
    echo "$r $bin $(echo "$out" | python3 -c 'import json, sys
d = json.load(sys.stdin)
print(round(d["turns_per_sec"]), d["p50_ms"], d["p95_ms"], d["p99_ms"])') $hwm"
  done
done
