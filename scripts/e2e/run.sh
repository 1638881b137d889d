#!/usr/bin/env bash
# End-to-end: start the real `moltbot gateway` on loopback with the embedded local model and
# drive it with real clients: curl (REST + SSE), the official `openai` Python client, the
# chat page in headless Chromium, and
# OpenClaw's own CLI and TUI. Then restart it and check history survived, and check
# `moltbot doctor`. Usage: run.sh MOLTBOT_BIN MODEL_GGUF
set -euo pipefail
BIN=$1
MODEL=$2
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${MOLTBOT_CACHE:-$HOME/.cache/moltbot}
WORK=$(mktemp -d)
PORT=${MOLTBOT_E2E_PORT:-18931}
TOKEN=e2e-$RANDOM-$RANDOM
URL=http://127.0.0.1:$PORT
PID=""
fail=0
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

export MOLTBOT_GATEWAY_TOKEN=$TOKEN
export MOLTBOT_DATA__DIR=$WORK/data
export MOLTBOT_MODEL__LOCAL__PATH=$MODEL
# The encoder was fetched beside the model by `moltbot models fetch`.
export MOLTBOT_UNDERSTANDING__ENCODER_PATH=$(dirname "$MODEL")/all-MiniLM-L6-v2
export MOLTBOT_MODEL__TEMPERATURE=0
export MOLTBOT_MODEL__MAX_TOKENS=48
export MOLTBOT_CONFIG=$WORK/none.toml
: >"$MOLTBOT_CONFIG"

start() {
  "$BIN" gateway --port "$PORT" >>"$WORK/gateway.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do
    if curl -fs "$URL/readyz" >/dev/null 2>&1; then return 0; fi
    kill -0 "$PID" 2>/dev/null || { echo "gateway exited:"; cat "$WORK/gateway.log"; return 1; }
    sleep 0.1
  done
  echo "gateway not ready in 60 s"; cat "$WORK/gateway.log"; return 1
}
stop() {
  kill -TERM "$PID"
  wait "$PID"
  local rc=$?
  PID=""
  return $rc
}
check() { # name, command...
  local name=$1; shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fail=1; fi
}

start
echo "gateway up on $URL (model $MODEL)"

# REST turn with curl.
reply=$(curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"session_id":"e2e-curl","message":"What is the capital of France?"}' "$URL/api/v1/chat")
echo "curl reply: $reply"
check "curl /api/v1/chat non-empty reply" python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["reply"].strip(), r' "$reply"

# The conversation's second turn reuses the first turn's KV state in the local model: only
# the new part of the prompt is read (the counters say so; BENCHMARKS.md has the timings).
for q in "What is the capital of France?" "And what is the capital of Germany?"; do
  second=$(curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d "{\"session_id\":\"e2e-kv\",\"message\":\"$q\"}" "$URL/api/v1/chat")
done
echo "second turn: $second"
metrics=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$URL/metrics")
check "the second turn reused the first turn's KV cells" bash -c 'grep -Eq "^moltbot_local_kv_cache_total\{[^}]*source=\"slot\"[^}]*\} [1-9]" <<<"$1" && grep -Eq "^moltbot_local_prompt_tokens_total\{phase=\"reused\"\} [1-9]" <<<"$1"' _ "$metrics"

# SSE streaming with curl: deltas then done.
sse=$(curl -fsSN -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"session_id":"e2e-sse","message":"Count to three.","stream":true}' "$URL/api/v1/chat")
check "curl SSE stream has delta and done events" bash -c 'grep -q "^event: delta" <<<"$1" && grep -q "^event: done" <<<"$1"' _ "$sse"

# Understanding: the gateway trains the built-in intents pack on first start (in the
# background), then classifies turns over HTTP.
understood=""
for _ in $(seq 1 300); do
  understood=$(curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"text":"could you tell me what time it is?"}' "$URL/api/v1/understand")
  grep -q '"fine"' <<<"$understood" && break
  sleep 0.2
done
echo "understand: $understood"
check "POST /api/v1/understand classifies a paraphrase" python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["fine"]=="ask_time" and r["coarse"]=="clock" and 0<=r["surprise"]<=1 and r["latency_ms"]>0, r' "$understood"
bad=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"text":""}' "$URL/api/v1/understand")
check "empty text is a 400" test "$bad" = 400

# intents train/eval/predict from TSV, then reload into the running gateway.
printf 'text\tlabel\nturn on the lights\thome/lights_on\nswitch the lamp on\thome/lights_on\nlights on please\thome/lights_on\nmake it bright in here\thome/lights_on\nturn off the lights\thome/lights_off\nswitch the lamp off\thome/lights_off\nlights off please\thome/lights_off\nmake it dark in here\thome/lights_off\nplay some jazz\tmedia/play_music\nput on a song\tmedia/play_music\nstart my playlist\tmedia/play_music\nplay music\tmedia/play_music\n' >"$WORK/home.tsv"
printf 'text\tlabel\nplease turn the lights on\thome/lights_on\nswitch off the lamp\thome/lights_off\nplay a song for me\tmedia/play_music\nhow tall is mount everest\tquiz/trivia\n' >"$WORK/home-test.tsv"
check "moltbot intents train (TSV) --reload" "$BIN" intents train "$WORK/home.tsv" --with-builtin --out "$WORK/home.safetensors" --reload --url "$URL" --token "$TOKEN"
ev=$("$BIN" intents eval "$WORK/home-test.tsv" --model "$WORK/home.safetensors" --json)
echo "eval: $ev"
check "moltbot intents eval --json" python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["accuracy"]==1.0 and r["macro_f1"]==1.0 and r["out_of_scope"]["out_of_scope"]==1, r' "$ev"
after=$(curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"text":"could you switch the lights on"}' "$URL/api/v1/understand")
check "the reloaded model serves without a restart" python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["fine"]=="lights_on", r' "$after"

# Knowledge: add a folder with the CLI (through the running gateway), search it, then ask
# over /api/v1/chat: the answer is grounded in the documents and cites them; a greeting is
# answered by its template without the model.
mkdir -p "$WORK/docs/policies"
printf '# Employee handbook\n\n## Vacation\n\nEvery employee gets 31 days of paid vacation per calendar year. Vacation requests are approved by your team lead.\n\n## Expenses\n\nTravel expenses are reimbursed within 14 days after the receipts are uploaded.\n' >"$WORK/docs/policies/handbook.md"
printf '<html><body><h1>Wi-Fi</h1><p>The office Wi-Fi network is called moltnet and its password is on the fridge.</p></body></html>' >"$WORK/docs/wifi.html"
caps=$("$BIN" capabilities --json --url "$URL" --token "$TOKEN")
check "moltbot capabilities lists the built-in tools" python3 -c 'import json,sys; r=json.loads(sys.argv[1]); st={c["name"]:c["status"] for c in r["capabilities"]}; assert st["web_fetch"]=="loaded" and st["cron"]=="loaded" and st["browser"]=="loaded" and st["exec"]=="disabled", st' "$caps"
check "moltbot approvals list (none pending)" bash -c '"$1" approvals list --url "$2" --token "$3" | grep -q "no approval is pending"' _ "$BIN" "$URL" "$TOKEN"
check "moltbot knowledge add DIR" "$BIN" knowledge add "$WORK/docs" --url "$URL" --token "$TOKEN"
found=$("$BIN" knowledge search "what is the wifi called" --json --url "$URL" --token "$TOKEN")
check "moltbot knowledge search finds the page" python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["hits"][0]["source"].endswith("wifi.html"), r' "$found"
check "moltbot knowledge list shows both files" bash -c '"$1" knowledge list --url "$2" --token "$3" | grep -q handbook.md' _ "$BIN" "$URL" "$TOKEN"
grounded=$(curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"session_id":"e2e-kb","message":"How many vacation days do employees get per year?"}' "$URL/api/v1/chat")
echo "grounded: $grounded"
check "a document question is answered from the documents, with citations" python3 -c 'import json,sys; r=json.loads(sys.argv[1]); rt=r["route"]; assert rt["route"]=="knowledge" and rt["grounding"] in ("model", "model_then_quotes") and "31" in r["reply"], r; assert rt["citations"][0]["source"].endswith("handbook.md"), r; assert "Sources: [1] " in r["reply"] and "handbook.md" in r["reply"], r' "$grounded"
greet=$(curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"session_id":"e2e-hi","message":"hi there"}' "$URL/api/v1/chat")
check "a greeting is answered by its template" python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["route"]["route"]=="template" and r["model"]=="moltbot-router", r' "$greet"

# A daily reminder set from a chat with the embedded model: the intent names the cron tool,
# the model fills the call under a grammar, the schedule comes from the user's words.
remind=$(curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"session_id":"e2e-remind","message":"remind me every day at 9 to call Anna"}' "$URL/api/v1/chat")
echo "reminder: $remind"
check "a chat sets a daily 9:00 reminder with the embedded model (cron tool)" python3 -c 'import json,sys; r=json.loads(sys.argv[1]); t=r["tools"]; assert t[0]["name"]=="cron" and t[1]["ok"], r' "$remind"
jobs=$("$BIN" cron list --json)
check "moltbot cron list shows it at 0 9 * * *" python3 -c 'import json,sys; j=json.loads(sys.argv[1]); j=j["jobs"] if isinstance(j, dict) else j; assert any(x["schedule_expr"]=="0 9 * * *" for x in j), j' "$jobs"

# The official openai Python client.
VENV=$CACHE/venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import openai' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'openai>=1.40,<3'
fi
check "openai python client" "$VENV/bin/python" "$HERE/openai_client.py" "$URL" "$TOKEN"

# The chat page in a real headless Chromium (playwright-core drives Debian's chromium).
BROWSER_DIR=$CACHE/browser
if [ ! -d "$BROWSER_DIR/node_modules/playwright-core" ]; then
  mkdir -p "$BROWSER_DIR"
  (cd "$BROWSER_DIR" && printf '{"name":"moltbot-e2e-browser","private":true}\n' >package.json &&
    npm install -q --no-audit --no-fund --no-package-lock playwright-core@1.63.0 >/dev/null)
fi
cp "$HERE/chat_page.mjs" "$BROWSER_DIR/chat_page.mjs"
check "chat page in Chromium" node "$BROWSER_DIR/chat_page.mjs" "$URL/" "$TOKEN" "$WORK/chat-page.png"

# OpenClaw's own CLI and TUI.
if [ "${MOLTBOT_SKIP_OPENCLAW:-0}" != 1 ]; then
  bash "$HERE/install-openclaw.sh" >/dev/null
  check "openclaw CLI and TUI" bash "$HERE/openclaw-e2e.sh" "ws://127.0.0.1:$PORT" "$TOKEN"
fi

# Graceful stop, restart: history is still there.
check "SIGTERM stops the gateway cleanly" stop
start
hist=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$URL/api/v1/sessions/e2e-curl")
check "history survives a restart" python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["session"]["message_count"]==2, r; assert "France" in r["messages"][0]["content"]' "$hist"
check "moltbot sessions list shows it" bash -c '"$1" sessions list | grep -q e2e-curl' _ "$BIN"

# doctor: green while the gateway runs (port in use by a healthy gateway is fine).
MOLTBOT_GATEWAY__PORT=$PORT check "moltbot doctor" "$BIN" doctor
stop || true

if [ $fail -ne 0 ]; then
  echo "--- gateway log"; tail -50 "$WORK/gateway.log"
  exit 1
fi
echo "e2e: all checks passed"
