#!/usr/bin/env bash
# Mixed dialogue workloads (short turns, long context, multi-turn sessions, batches) over
# HTTP and the OpenClaw WebSocket together, in one run, against the same instant mock model:
#   1. one gateway (SQLite, in-process bus): the reference;
#   2. the same gateway behind nginx (the shipped deploy/nginx/moltbot.conf): what the proxy
#      costs;
#   3. three replicas on Kafka + PostgreSQL behind nginx (least_conn): the scale-out layout.
# Each: CLIENTS clients (half HTTP, half WebSocket), TURNS turns each, turns/s and
# p50/p95/p99 in all and per workload and transport. Release build; tansu and PostgreSQL
# from scripts/services.sh, nginx from Debian; loopback only; stops by itself.
# Usage: scripts/bench-mixed.sh [TURNS_PER_CLIENT]   (default 200)
#   BENCH_ENCODER=minilm scripts/bench-mixed.sh   the full default engine: every turn also
#       pays a MiniLM pass for the intent router (long inputs dominate); the default `none`
#       keeps the sparse intent model, so the numbers show the serving path itself.
set -euo pipefail
cd "$(dirname "$0")/.."
TURNS=${1:-200}
CLIENTS=${BENCH_CLIENTS:-16}
MIX=${BENCH_MIX:-short:60,long:15,multi:20,batch:5}
NGINX=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true)
[ -n "$NGINX" ] || { echo "nginx is needed (scripts/setup-deps.sh --test)" >&2; exit 2; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moltbot/target}
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --locked --bin moltbot --bin moltbot-bench >&2
BIN=$CARGO_TARGET_DIR/release/moltbot
BENCH=$CARGO_TARGET_DIR/release/moltbot-bench
MOCK_PORT=18983
source scripts/bench-mock-env.sh
bash scripts/services.sh start all >&2
eval "$(bash scripts/services.sh env | sed 's/^/export /')"
BROKERS=$MOLTBOT_TEST_KAFKA
PREFIX=mixed$(date +%s)
export MOLTBOT_GATEWAY__MAX_CONCURRENT_TURNS=1024
export MOLTBOT_UNDERSTANDING__ENCODER=${BENCH_ENCODER:-none}

# nginx_up LISTEN_PORT UPSTREAM_PORT...: the shipped site file with loopback upstreams and a
# plain-HTTP listener (TLS lines dropped), in a minimal main config of its own.
nginx_up() {
  local listen=$1; shift
  local d=$WORK/nginx-$listen
  mkdir -p "$d"
  python3 - deploy/nginx/moltbot.conf "$d/moltbot.conf" "$listen" "$@" <<'PY'
import sys
src, dst, listen, ups = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
out, seen = [], set()
for line in open(src):
    t = line.strip()
    if t.startswith("server moltbot:18789"):
        out += [f"    server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;\n" for p in ups]
        seen.add("upstream")
    elif t.startswith("listen 8443"):
        out.append(f"    listen 127.0.0.1:{listen};\n")
        seen.add("listen")
    elif t.startswith("listen [::]") or t.startswith("ssl_"):
        pass
    else:
        out.append(line)
if seen != {"upstream", "listen"}:
    sys.exit("deploy/nginx/moltbot.conf changed shape: update scripts/bench-mixed.sh")
open(dst, "w").writelines(out)
PY
  local user=""
  [ "$(id -u)" = 0 ] && user="user root;"
  cat >"$d/nginx.conf" <<CONF
$user
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $d/body; proxy_temp_path $d/proxy; fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;
  include $d/moltbot.conf;
}
CONF
  "$NGINX" -c "$d/nginx.conf" -g 'daemon off;' 2>>"$d/error.log" &
  pids+=($!)
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$listen/healthz" >/dev/null && return 0; sleep 0.05; done
  echo "nginx did not start:" >&2; cat "$d/error.log" >&2; return 1
}

stop_all() { for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; pids=("${pids[0]}"); }

run() {
  echo "## $1"
  "$BENCH" load --url "$2" --mode both --mix "$MIX" --clients "$CLIENTS" --turns "$TURNS"
}

export MOLTBOT_DATA__DIR=$WORK/data-solo
start_gw 18984 solo
run "1 gateway (SQLite, in-process bus)" http://127.0.0.1:18984
nginx_up 18980 18984
run "1 gateway behind nginx" http://127.0.0.1:18980
stop_all

export MOLTBOT_DATA__DATABASE_URL=$MOLTBOT_TEST_POSTGRES
# t_ schemas are dropped by the next `services.sh start postgres`.
export MOLTBOT_DATA__DATABASE_SCHEMA=t_mixed$(date +%s)
MOLTBOT_DATA__DIR=$WORK/data-r0 start_gw 18985 m0 kafka; sleep 1
MOLTBOT_DATA__DIR=$WORK/data-r1 start_gw 18986 m1 kafka; sleep 1
MOLTBOT_DATA__DIR=$WORK/data-r2 start_gw 18987 m2 kafka
settle 18985 18986 18987
nginx_up 18981 18985 18986 18987
run "3 replicas on Kafka + PostgreSQL behind nginx (least_conn)" http://127.0.0.1:18981
stop_all
