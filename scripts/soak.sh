#!/usr/bin/env bash
# A bounded soak: one gateway (release build) in front of the instant mock model, steady load
# from 16 HTTP clients whose sessions rotate every 20 turns (so the session cache fills to its
# bound and the store keeps growing), the gateway's RSS sampled every 10 s.
#
#   scripts/soak.sh [MINUTES]      (default 30; loopback only; stops by itself)
#   SOAK_PROFILE=debug scripts/soak.sh 10   (the test build: no release build needed)
#   SOAK_MIX=short:60,long:15,multi:20,batch:5 scripts/soak.sh 30
#       (mixed workloads, half the clients over HTTP and half over the WebSocket)
#
# Writes bench/soak/rss-<date>.csv (seconds, RSS, turns done, the session cache's size and
# bounds from /health) and prints the RSS after the
# warm-up (the first fifth of the run, at least 2 min) and over the last 3 minutes (medians
# of 3 minutes of samples each), the growth between them, the median of each 5 minutes,
# the trend of a line fitted through the samples after the warm-up, and the turns/s of each
# load round. Exits 1 when RSS grew by 5 % or more after warm-up (by either measure),
# or when the session cache held more than its bounds allow.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-30}
CLIENTS=${SOAK_CLIENTS:-16}
MODE=http
MIXARGS=()
if [ -n "${SOAK_MIX:-}" ]; then
  MODE=both
  MIXARGS=(--mix "$SOAK_MIX")
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moltbot/target}
PROFILE=${SOAK_PROFILE:-release}
# SOAK_NO_BUILD=1 runs the binaries already built (while the tree is being edited).
if [ "$PROFILE" = release ]; then
  [ -n "${SOAK_NO_BUILD:-}" ] || cargo build --release --locked --bin moltbot --bin moltbot-bench >&2
  OUTDIR=$CARGO_TARGET_DIR/release
else
  [ -n "${SOAK_NO_BUILD:-}" ] || cargo build --locked --bin moltbot --bin moltbot-bench >&2
  OUTDIR=$CARGO_TARGET_DIR/debug
fi
BIN=$OUTDIR/moltbot
BENCH=$OUTDIR/moltbot-bench
MOCK_PORT=18995
GW_PORT=18996
source scripts/bench-mock-env.sh
# A session cache small enough to fill during the warm-up: growth after it is then a leak,
# not a bounded cache still filling (the default 4,096 sessions take ~20 rounds to fill).
export MOLTBOT_SESSIONS__HOT_CACHE_SESSIONS=${SOAK_HOT_SESSIONS:-256}

"$BIN" gateway --port $GW_PORT 2>"$WORK/gw.log" &
GW=$!
pids+=($GW)
for _ in $(seq 1 200); do curl -fs http://127.0.0.1:$GW_PORT/readyz >/dev/null && break; sleep 0.05; done

mkdir -p bench/soak
CSV=bench/soak/rss-$PROFILE-$(date -u +%Y%m%d-%H%M).csv
echo "seconds,rss_kib,turns_done,cached_sessions,cache_bytes,cache_limit,cache_budget_bytes" >"$CSV"
echo 0 >"$WORK/turns"
start=$SECONDS
(
  while kill -0 $GW 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' /proc/$GW/status 2>/dev/null || echo 0)
    cache=$(curl -fs --max-time 5 http://127.0.0.1:$GW_PORT/health | python3 -c '
import json, sys
c = json.load(sys.stdin)["components"]["gateway"]["session_cache"]
print(",".join(str(c[k]) for k in ("sessions", "bytes", "limit", "budget_bytes")))' 2>/dev/null ||
      echo ",,,")
    echo "$((SECONDS - start)),$rss,$(cat "$WORK/turns"),$cache" >>"$CSV"
    sleep 10
  done
) &
pids+=($!)

deadline=$((start + MINUTES * 60))
round=0
done_turns=0
while [ $SECONDS -lt $deadline ]; do
  round=$((round + 1))
  out=$("$BENCH" load --url http://127.0.0.1:$GW_PORT --mode "$MODE" --clients "$CLIENTS" \
    --turns 250 --warmup 0 --session-turns 20 "${MIXARGS[@]}" --json)
  turns=$(echo "$out" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["turns"]))')
  done_turns=$((done_turns + turns))
  echo $done_turns >"$WORK/turns"
  echo "round $round at $((SECONDS - start)) s: $out"
done
sleep 11 # one more sample after the last round

python3 - "$CSV" "$MINUTES" "$CLIENTS" <<'PY'
import csv, statistics, sys
table = list(csv.DictReader(open(sys.argv[1])))
rows = [(int(r["seconds"]), int(r["rss_kib"])) for r in table]
# The session cache stays within its bounds: sessions a turn holds cannot be evicted, so
# the count may pass the limit by the turns in flight (a client has at most 8 at once).
cache = [r for r in table if r["cached_sessions"]]
if not cache:
    sys.exit("no session cache samples (is /health answering?)")
most = max(int(r["cached_sessions"]) for r in cache)
most_bytes = max(int(r["cache_bytes"]) for r in cache)
limit, budget = int(cache[-1]["cache_limit"]), int(cache[-1]["cache_budget_bytes"])
in_flight = 8 * int(sys.argv[3])
print(f"session cache: at most {most} sessions (limit {limit}), "
      f"{most_bytes / 1024:.0f} KiB (budget {budget / 1024:.0f} KiB)")
cache_ok = most <= limit + in_flight and most_bytes <= budget
total = int(sys.argv[2]) * 60
warm = max(120, total // 5)
# RSS swings by ±10 % between samples (load rounds start and end), so each side is the
# median of three minutes of samples: right after the warm-up, and the last three minutes.
last = rows[-1][0]
after = [kib for s, kib in rows if warm <= s < warm + 180]
end = [kib for s, kib in rows if s > last - 180]
if not after or not end:
    sys.exit(f"too few samples in {sys.argv[1]}")
a, e = statistics.median(after), statistics.median(end)
growth = (e - a) / a * 100
print(f"samples: {len(rows)} in {rows[-1][0]} s ({sys.argv[1]})")
curve = []
for lo in range(0, last, 300):
    w = [kib for s, kib in rows if lo <= s < lo + 300]
    if w:
        curve.append(f"{statistics.median(w) / 1024:.0f}")
print("RSS median per 5 min (MiB): " + " / ".join(curve))
print(f"RSS after warm-up ({warm} s): {a / 1024:.1f} MiB; at the end: {e / 1024:.1f} MiB; "
      f"growth {growth:+.2f} %; peak {max(k for _, k in rows) / 1024:.1f} MiB")
# The trend too: a least-squares line through every sample after the warm-up, as growth
# over that span relative to its mean (a steady leak shows here even when the two
# windows happen to land on a low and a high).
xs = [s for s, _ in rows if s >= warm]
ys = [kib for s, kib in rows if s >= warm]
mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-9, sum((x - mx) ** 2 for x in xs))
trend = slope * (xs[-1] - xs[0]) / my * 100
print(f"trend after warm-up: {slope * 60 / 1024:+.3f} MiB/min, {trend:+.2f} % over {xs[-1] - xs[0]} s")
if not cache_ok:
    print("the session cache passed its bounds")
sys.exit(0 if growth < 5 and trend < 5 and cache_ok else 1)
PY
