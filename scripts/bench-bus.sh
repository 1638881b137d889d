#!/usr/bin/env bash
# What the Kafka bus costs per turn, in one run against the same instant mock model:
#   - in-process (one gateway, no bus): the reference;
#   - kafka, 1 replica: every turn goes gateway -> tansu -> the same gateway -> tansu -> back;
#   - kafka, 3 replicas sharing one store, clients spread over them (turns cross replicas);
#   - the same two layouts on PostgreSQL (scripts/services.sh): one gateway without a bus,
#     and 3 replicas on Kafka + PostgreSQL, each with a data folder of its own.
# Each: 16 HTTP clients on /api/v1/chat, TURNS turns each (default 300), turns/s and
# p50/p95/p99. Release build; the tansu broker from scripts/services.sh; loopback only.
# Usage: scripts/bench-bus.sh [TURNS_PER_CLIENT]
set -euo pipefail
cd "$(dirname "$0")/.."
TURNS=${1:-300}
CLIENTS=${BENCH_CLIENTS:-16}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moltbot/target}
cargo build --release --locked --bin moltbot --bin moltbot-bench >&2
BIN=$CARGO_TARGET_DIR/release/moltbot
BENCH=$CARGO_TARGET_DIR/release/moltbot-bench
MOCK_PORT=18993
source scripts/bench-mock-env.sh
bash scripts/services.sh start tansu
BROKERS=$(bash scripts/services.sh env | sed -n 's/^MOLTBOT_TEST_KAFKA=//p')
PREFIX=bench$(date +%s)

stop_all() { for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; pids=("${pids[0]}"); }

run() {
  echo "## $1"
  "$BENCH" load --url "$2" --mode http --clients "$CLIENTS" --turns "$TURNS" --warmup 5
}

export MOLTBOT_GATEWAY__MAX_CONCURRENT_TURNS=1024
start_gw 18994 solo
run "in-process bus, 1 gateway" http://127.0.0.1:18994
stop_all

export MOLTBOT_DATA__DIR=$WORK/data-kafka1
start_gw 18995 k1 kafka
settle 18995
run "kafka bus, 1 replica" http://127.0.0.1:18995
stop_all
PREFIX=${PREFIX}b

export MOLTBOT_DATA__DIR=$WORK/data-kafka3
start_gw 18996 r0 kafka; sleep 1
start_gw 18997 r1 kafka; sleep 1
start_gw 18998 r2 kafka
settle 18996 18997 18998
run "kafka bus, 3 replicas (clients spread over them)" \
  http://127.0.0.1:18996,http://127.0.0.1:18997,http://127.0.0.1:18998
stop_all

# PostgreSQL: the store every replica on every host would share.
bash scripts/services.sh start postgres
export MOLTBOT_DATA__DATABASE_URL
MOLTBOT_DATA__DATABASE_URL=$(bash scripts/services.sh env | sed -n 's/^MOLTBOT_TEST_POSTGRES=//p')
# t_ schemas are dropped by the next `services.sh start postgres`.
export MOLTBOT_DATA__DATABASE_SCHEMA=t_bench$(date +%s)
export MOLTBOT_DATA__DIR=$WORK/data-pg1
start_gw 18999 solo-pg
run "in-process bus, 1 gateway, PostgreSQL store" http://127.0.0.1:18999
stop_all

PREFIX=${PREFIX}c
export MOLTBOT_DATA__DATABASE_SCHEMA=${MOLTBOT_DATA__DATABASE_SCHEMA}b
MOLTBOT_DATA__DIR=$WORK/data-pg-r0 start_gw 19000 p0 kafka; sleep 1
MOLTBOT_DATA__DIR=$WORK/data-pg-r1 start_gw 19001 p1 kafka; sleep 1
MOLTBOT_DATA__DIR=$WORK/data-pg-r2 start_gw 19002 p2 kafka
settle 19000 19001 19002
run "kafka bus, 3 replicas, PostgreSQL store (clients spread over them)" \
  http://127.0.0.1:19000,http://127.0.0.1:19001,http://127.0.0.1:19002
stop_all
