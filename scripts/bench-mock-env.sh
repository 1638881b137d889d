# Sourced by benchmark scripts: a scratch folder, a `mock-llm` (a real loopback server
# speaking the OpenAI format) on $MOCK_PORT, cleanup of every pid in `pids` on exit, and the
# environment that points a gateway at the mock with an empty config and a fresh data dir.
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
