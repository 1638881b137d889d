# Sourced by benchmark scripts: a scratch folder, a `mock-llm` (a real loopback server
# speaking the OpenAI format) on $MOCK_PORT, cleanup of every pid in `pids` on exit, the
# environment that points a gateway at the mock with an empty config and a fresh data dir,
# and `start_gw` / `settle` for gateways on the Kafka bus ($BROKERS, $PREFIX).
# Needs BIN (the moltbot binary) and MOCK_PORT.
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN" mock-llm --listen 127.0.0.1:$MOCK_PORT 2>/dev/null &
pids+=($!)
sleep 0.3

export MOLTBOT_CONFIG=$WORK/none.toml
: >"$MOLTBOT_CONFIG"
export MOLTBOT_DATA__DIR=$WORK/data
export MOLTBOT_MODEL__PROVIDERS='["openai"]'
export MOLTBOT_MODEL__OPENAI__BASE_URL=http://127.0.0.1:$MOCK_PORT/v1
export MOLTBOT_MODEL__OPENAI__MODEL=mock
export MOLTBOT_GATEWAY__MAX_CONCURRENT_TURNS=1024
export MOLTBOT_LOG__LEVEL=warn

# start_gw PORT NAME [kafka]: a gateway in the background, its pid in `pids`.
start_gw() {
  local port=$1 name=$2 bus=${3:-}
  if [ "$bus" = kafka ]; then
    MOLTBOT_BUS__KIND=kafka MOLTBOT_BUS__BROKERS=$BROKERS MOLTBOT_BUS__TOPIC_PREFIX=$PREFIX \
      MOLTBOT_BUS__GROUP_ID=$PREFIX-group MOLTBOT_BUS__REPLICA_ID=$name \
      MOLTBOT_BUS__SESSION_TIMEOUT_MS=6000 MOLTBOT_BUS__TURN_TIMEOUT_SECS=60 \
      "$BIN" gateway --port "$port" 2>"$WORK/$name.log" &
  else
    "$BIN" gateway --port "$port" 2>"$WORK/$name.log" &
  fi
  pids+=($!)
  for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && return 0; sleep 0.05; done
  echo "gateway $name did not start:" >&2; tail -20 "$WORK/$name.log" >&2; return 1
}

# settle PORT...: wait until the replicas own all 12 partitions between them, each some.
settle() {
  for _ in $(seq 1 600); do
    local owned=()
    for p in "$@"; do
      owned+=("$(curl -fs "http://127.0.0.1:$p/health" | python3 -c \
        'import json,sys; print(len(json.load(sys.stdin)["components"]["bus"]["detail"]["partitions"]))' 2>/dev/null || echo 0)")
    done
    local sum=0 zero=0
    for n in "${owned[@]}"; do sum=$((sum + n)); [ "$n" -eq 0 ] && zero=1; done
    # Then a few seconds more: a join still in flight would move partitions mid-load.
    if [ "$sum" -eq 12 ] && [ "$zero" -eq 0 ]; then sleep 5; return 0; fi
    sleep 0.25
  done
  echo "the consumer group did not settle" >&2; return 1
}
