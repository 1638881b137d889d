#!/usr/bin/env bash
# End-to-end check of a running gateway with the real OpenClaw CLI and TUI.
#
#   scripts/e2e/openclaw-e2e.sh URL TOKEN [EXPECT]
#
#   URL     gateway WebSocket URL, e.g. ws://127.0.0.1:18789 (loopback only)
#   TOKEN   the gateway's shared token
#   EXPECT  optional substring that the agent's reply and the TUI screen must
#           contain. "{msg}" in it is replaced by the message sent in that step,
#           so with a fake model that answers "echo: <last user message>" use
#           EXPECT='echo: {msg}'.
#
# The CLI runs with a fresh, throwaway HOME / state dir / config, so no user
# configuration is read. OpenClaw is taken from $OPENCLAW_NODE + $OPENCLAW_JS
# when both are set, else installed/reused via install-openclaw.sh.
#
# Tunables (environment):
#   E2E_CMD_TIMEOUT       seconds per CLI command                 (default 120)
#   E2E_TUI_START_TIMEOUT seconds for the TUI to show "connected"  (default 60)
#   E2E_TUI_REPLY_TIMEOUT seconds for the TUI reply to appear      (default 60)
#   E2E_AGENT_MESSAGE     message for `openclaw agent`    (default "Say hello")
#   E2E_TUI_MESSAGE       message typed into the TUI      (default "Say hello from the TUI <pid>")
#   E2E_TUI_COLS, E2E_TUI_ROWS  tmux window size                (default 120x40)
#   E2E_KEEP_TMP=1        keep the temp dir (prints its path)
#
# Prints PASS/FAIL per step and a closing "N passed, N failed" line; exits 1
# if any step failed, 2 on bad usage or setup failure.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 URL TOKEN [EXPECT]" >&2
  exit 2
fi
URL="$1"
TOKEN="$2"
EXPECT="${3:-}"

CMD_TIMEOUT="${E2E_CMD_TIMEOUT:-120}"
TUI_START_TIMEOUT="${E2E_TUI_START_TIMEOUT:-60}"
TUI_REPLY_TIMEOUT="${E2E_TUI_REPLY_TIMEOUT:-60}"
AGENT_MESSAGE="${E2E_AGENT_MESSAGE:-Say hello}"
# Unique per run, so a reply left in the session history by an earlier run
# cannot be mistaken for this run's reply.
TUI_MESSAGE="${E2E_TUI_MESSAGE:-Say hello from the TUI $$}"
TUI_COLS="${E2E_TUI_COLS:-120}"
TUI_ROWS="${E2E_TUI_ROWS:-40}"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# ---------------------------------------------------------------- setup
case "$URL" in
  ws://127.* | ws://localhost:* | ws://localhost | ws://\[::1\]*) ;;
  *) echo "openclaw-e2e: refusing non-loopback URL: $URL" >&2; exit 2 ;;
esac

if [[ -z "${OPENCLAW_NODE:-}" || -z "${OPENCLAW_JS:-}" ]]; then
  env_file="$("$script_dir/install-openclaw.sh" --env-file)" || { echo "openclaw-e2e: install failed" >&2; exit 2; }
  # shellcheck disable=SC1090
  source "$env_file"
fi
[[ -x "$OPENCLAW_NODE" && -f "$OPENCLAW_JS" ]] || { echo "openclaw-e2e: bad OPENCLAW_NODE/OPENCLAW_JS" >&2; exit 2; }
command -v tmux >/dev/null 2>&1 || { echo "openclaw-e2e: tmux is required" >&2; exit 2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/openclaw-e2e.XXXXXX")"
# A private tmux server (socket inside WORK): never touches the user's tmux.
TMUX_SOCK="$WORK/tmux.sock"
TMUX_SESSION="oc-tui-$$"
tmux_() { tmux -S "$TMUX_SOCK" -f /dev/null "$@"; }

cleanup() {
  tmux_ kill-server >/dev/null 2>&1 || true
  if [[ "${E2E_KEEP_TMP:-0}" == "1" ]]; then
    echo "openclaw-e2e: kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

mkdir -p "$WORK/home" "$WORK/state" "$WORK/out"
# A config file that exists (avoids a "Config unavailable" warning), turns off
# the startup update check and keeps the CLI's log file in WORK (default:
# /tmp/openclaw/openclaw-<date>.log); its tail is shown when a step fails.
LOG_FILE="$WORK/state/openclaw.log"
printf '{ "update": { "checkOnStart": false }, "logging": { "file": "%s" } }\n' "$LOG_FILE" \
  >"$WORK/state/openclaw.json"

# The isolated environment every OpenClaw process runs with (env -i + this).
ISO_ENV=(
  "PATH=$(dirname "$OPENCLAW_NODE"):/usr/local/bin:/usr/bin:/bin"
  "HOME=$WORK/home"
  "OPENCLAW_HOME=$WORK/home"
  "OPENCLAW_STATE_DIR=$WORK/state"
  "OPENCLAW_CONFIG_PATH=$WORK/state/openclaw.json"
  "OPENCLAW_NO_AUTO_UPDATE=1"
  "DO_NOT_TRACK=1"
  "NO_COLOR=1"
  "LANG=C.UTF-8"
  "LC_ALL=C.UTF-8"
)
# Target via environment (used by commands that take no --url).
TARGET_ENV=("OPENCLAW_GATEWAY_URL=$URL" "OPENCLAW_GATEWAY_TOKEN=$TOKEN")

# oc OUTNAME [ENV...] -- ARGS...: run the CLI isolated, stdout/stderr to files,
# bounded by timeout; returns the CLI's exit status.
oc() {
  local name="$1"; shift
  local extra=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do extra+=("$1"); shift; done
  shift
  (cd "$WORK" && env -i "${ISO_ENV[@]}" "${extra[@]}" \
    timeout -k 5 "$CMD_TIMEOUT" "$OPENCLAW_NODE" "$OPENCLAW_JS" "$@" \
    >"$WORK/out/$name.out" 2>"$WORK/out/$name.err" </dev/null)
}

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS $1${2:+: $2}"; }
fail() {
  failed=$((failed + 1)); echo "FAIL $1: $2"
  local name="${3:-}"
  if [[ -n "$name" ]]; then
    echo "  --- stdout (last 20 lines):"; tail -n 20 "$WORK/out/$name.out" 2>/dev/null | sed 's/^/  | /'
    echo "  --- stderr (last 20 lines):"; tail -n 20 "$WORK/out/$name.err" 2>/dev/null | sed 's/^/  | /'
  fi
  show_log
}
log_lines=0
# show_log: print CLI log lines written since the previous call (message text only).
show_log() {
  [[ -f "$LOG_FILE" ]] || return 0
  local total; total=$(wc -l <"$LOG_FILE")
  if ((total > log_lines)); then
    echo "  --- openclaw log (new lines, last 15):"
    tail -n +$((log_lines + 1)) "$LOG_FILE" | tail -n 15 |
      "$OPENCLAW_NODE" -e '
        const lines = require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean);
        for (const l of lines) {
          try { const o = JSON.parse(l); const m = o._meta || {};
            const msg = Object.keys(o).filter((k) => k !== "_meta").map((k) => typeof o[k] === "string" ? o[k] : JSON.stringify(o[k])).join(" ");
            console.log("  | " + (m.logLevelName || "") + " " + msg.slice(0, 300));
          } catch { console.log("  | " + l.slice(0, 300)); }
        }'
  fi
  log_lines=$total
}
expect_for() { local m="$1"; echo "${EXPECT//\{msg\}/$m}"; }
# json_check FILE JS-EXPR: parse FILE as JSON into `d` and evaluate JS-EXPR
# (must be truthy); prints a reason on failure.
json_check() {
  "$OPENCLAW_NODE" -e '
    const fs = require("fs");
    let d;
    try { d = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); }
    catch (e) { console.log("stdout is not JSON: " + e.message); process.exit(1); }
    const ok = (0, eval)("(d) => (" + process.argv[2] + ")")(d);
    if (!ok) { console.log("JSON check failed: " + process.argv[2]); process.exit(1); }
  ' "$1" "$2"
}
rc_reason() { if [[ "$1" == 124 || "$1" == 137 ]]; then echo "timed out after ${CMD_TIMEOUT}s"; else echo "exit $1"; fi; }

echo "openclaw-e2e: $("$OPENCLAW_NODE" "$OPENCLAW_JS" --version 2>/dev/null | head -n1) on node $("$OPENCLAW_NODE" --version) against $URL"

# ---------------------------------------------------------------- a. health
step="a1 gateway call health --url --token --json"
rc=0; oc health_url -- gateway call health --url "$URL" --token "$TOKEN" --json || rc=$?
if [[ $rc -ne 0 ]]; then fail "$step" "$(rc_reason $rc)" health_url
elif why="$(json_check "$WORK/out/health_url.out" 'd && typeof d === "object"')"; then pass "$step"
else fail "$step" "$why" health_url; fi

step="a2 gateway call health --json (env target)"
rc=0; oc health_env "${TARGET_ENV[@]}" -- gateway call health --json || rc=$?
if [[ $rc -ne 0 ]]; then fail "$step" "$(rc_reason $rc)" health_env
elif why="$(json_check "$WORK/out/health_env.out" 'd && typeof d === "object"')"; then pass "$step"
else fail "$step" "$why" health_env; fi

step="a3 health --json (env target)"
rc=0; oc health_cmd "${TARGET_ENV[@]}" -- health --json || rc=$?
if [[ $rc -ne 0 ]]; then fail "$step" "$(rc_reason $rc)" health_cmd
elif why="$(json_check "$WORK/out/health_cmd.out" 'd && typeof d === "object"')"; then pass "$step"
else fail "$step" "$why" health_cmd; fi

# ---------------------------------------------------------------- b. agent
step="b  agent --message (env target, no --agent)"
rc=0; oc agent "${TARGET_ENV[@]}" -- agent --message "$AGENT_MESSAGE" || rc=$?
agent_text="$(tr -d '\r' <"$WORK/out/agent.out" | sed '/^[[:space:]]*$/d')"
want="$(expect_for "$AGENT_MESSAGE")"
if [[ $rc -ne 0 ]]; then fail "$step" "$(rc_reason $rc)" agent
elif [[ -z "$agent_text" ]]; then fail "$step" "empty stdout" agent
elif [[ -n "$want" && "$agent_text" != *"$want"* ]]; then fail "$step" "stdout lacks \"$want\"" agent
else pass "$step" "$(head -c 100 <<<"$agent_text" | head -n 1)"; fi

# ---------------------------------------------------------------- c. sessions.list
step="c  gateway call sessions.list --json"
rc=0; oc sessions -- gateway call sessions.list --url "$URL" --token "$TOKEN" --json || rc=$?
if [[ $rc -ne 0 ]]; then fail "$step" "$(rc_reason $rc)" sessions
elif why="$(json_check "$WORK/out/sessions.out" \
    'Array.isArray(d.sessions) && d.sessions.length > 0 && d.sessions.every((s) => typeof s.key === "string")')"; then
  pass "$step" "$("$OPENCLAW_NODE" -p 'const d=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); d.sessions.length+" session(s): "+d.sessions.map(s=>s.key).join(", ")' "$WORK/out/sessions.out")"
else fail "$step" "$why" sessions; fi

# ---------------------------------------------------------------- d. TUI
step="d  tui in tmux (${TUI_COLS}x${TUI_ROWS})"
screen_file="$WORK/out/tui.screen"
capture() { tmux_ capture-pane -p -J -t "$TMUX_SESSION" >"$screen_file" 2>/dev/null || true; }
show_screen() {
  echo "  --- TUI screen:"
  sed -e 's/[[:space:]]*$//' "$screen_file" 2>/dev/null | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' | sed 's/^/  | /'
}
# Status line: the line just above the footer (" agent main | session main | ...").
# Idle it reads "<connection> | <activity>" (" connected | idle"); busy it reads
# "<spinner> <activity> • <elapsed> | <connection>". The footer may wrap on
# narrow terminals, so find it by its start rather than by its pipes.
status_line() {
  awk '/^ *agent [^|]+\| session / { s = prev } { prev = $0 } END { print s }' "$screen_file" |
    sed -e 's/[[:space:]]*$//'
}
# Problem lines, ignoring lines that echo our own message or the expected reply.
# The TUI's banner ("OpenClaw <version> (<commit>) — <a random joke>") is not an error even
# when the joke mentions one ("Reading the error message remains undefeated…").
bad_lines() {
  sed -e 's/[[:space:]]*$//' "$screen_file" | grep -vE '^[[:space:]]*OpenClaw [0-9][^ ]* \([0-9a-f]+\) ' |
    grep -iE 'error|failed|not connected|disconnected' |
    grep -vF -- "$TUI_MESSAGE" | { if [[ -n "$tui_want" ]]; then grep -vF -- "$tui_want"; else cat; fi; } || true
}
tui_want="$(expect_for "$TUI_MESSAGE")"
# Lines containing the expected reply, not counting the line that shows the
# typed message itself.
want_count() {
  awk -v m="$TUI_MESSAGE" -v w="$tui_want" '
    { line = $0; gsub(/^[ \t]+|[ \t]+$/, "", line) }
    line != m && index($0, w) { n++ }
    END { print n + 0 }' "$screen_file"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
ms_since() { local d=$(($(now_ms) - $1)); printf '%d.%01ds' $((d / 1000)) $((d % 1000 / 100)); }
q() { printf '%q' "$1"; }
tui_cmd="exec env -i TERM=\"\$TERM\""
for kv in "${ISO_ENV[@]}"; do tui_cmd+=" $(q "$kv")"; done
tui_cmd="($tui_cmd $(q "$OPENCLAW_NODE") $(q "$OPENCLAW_JS") tui --url $(q "$URL") --token $(q "$TOKEN")); echo \"[tui exited: \$?]\"; sleep 600"
tui_fail() { fail "$step" "$1"; capture; show_screen; }

if ! (cd "$WORK" && tmux_ -u new-session -d -s "$TMUX_SESSION" -x "$TUI_COLS" -y "$TUI_ROWS" "bash -c $(q "$tui_cmd")"); then
  fail "$step" "could not start tmux"
else
  t0=$(date +%s); t0ms=$(now_ms)
  state="starting"
  # 1. wait for the status line to say connected (bounded)
  while :; do
    capture
    st="$(status_line)"
    if grep -qF '[tui exited' "$screen_file"; then state="exited"; break; fi
    if [[ "$st" =~ ^\ *(gateway\ )?(re)?connected\ \| ]]; then state="connected"; break; fi
    if [[ -n "$(bad_lines)" ]]; then state="error"; break; fi
    if (($(date +%s) - t0 >= TUI_START_TIMEOUT)); then state="timeout"; break; fi
    sleep 0.5
  done
  t_conn="$(ms_since "$t0ms")"
  case "$state" in
    exited) tui_fail "TUI exited before connecting" ;;
    error) tui_fail "error line before connecting: $(bad_lines | head -n 1 | sed 's/^ *//')" ;;
    timeout) tui_fail "not connected after ${TUI_START_TIMEOUT}s (status: ${st:-none})" ;;
    connected)
      # Let startup requests (history, session info) settle, then re-check.
      sleep 1; capture
      if [[ -n "$(bad_lines)" ]]; then
        tui_fail "error line after connecting: $(bad_lines | head -n 1 | sed 's/^ *//')"
      else
        want_before="$(want_count)"
        # 2. type the message and submit it
        tmux_ send-keys -t "$TMUX_SESSION" -l -- "$TUI_MESSAGE"
        sleep 0.3
        tmux_ send-keys -t "$TMUX_SESSION" Enter
        t1=$(date +%s); t1ms=$(now_ms)
        state="waiting"
        # 3. wait for the reply: EXPECT on screen, or (without EXPECT) a
        #    non-empty line after our message and the activity back to idle.
        while :; do
          sleep 0.25
          capture
          st="$(status_line)"
          if grep -qF '[tui exited' "$screen_file"; then state="exited"; break; fi
          if [[ -n "$(bad_lines)" ]]; then state="error"; break; fi
          if [[ -n "$tui_want" ]]; then
            if (($(want_count) > want_before)); then state="replied"; break; fi
          else
            after="$(awk -v m="$TUI_MESSAGE" -v s="$st" '
              { line = $0; gsub(/^[ \t]+|[ \t]+$/, "", line) }
              line == m { seen = 1; n = 0; next }
              seen && $0 == s { exit }
              seen && $0 ~ /[^[:space:]─-]/ { n++ }
              END { print n + 0 }' "$screen_file")"
            if [[ "$st" == *"| idle"* && "${after:-0}" -gt 0 ]]; then state="replied"; break; fi
          fi
          if (($(date +%s) - t1 >= TUI_REPLY_TIMEOUT)); then state="timeout"; break; fi
        done
        case "$state" in
          replied)
            t_reply="$(ms_since "$t1ms")"
            # Catch late error lines (e.g. a failed refresh after the final event).
            sleep 1; capture
            if [[ -n "$(bad_lines)" ]]; then
              tui_fail "error line after the reply: $(bad_lines | head -n 1 | sed 's/^ *//')"
            else
              pass "$step" "connected after ${t_conn}, reply after ${t_reply}"
              # e. A turn made elsewhere (over HTTP, on the same session) appears in the
              #    open TUI: the user's line (session.message) and the reply (chat events).
              step="e  tui shows a turn made over HTTP"
              other_msg="sent over http $$"
              http_url="${URL/#ws/http}"
              if curl -fsS -m "$CMD_TIMEOUT" -H "Authorization: Bearer $TOKEN" \
                -H 'Content-Type: application/json' \
                -d "{\"session_id\":\"agent:main:main\",\"message\":\"$other_msg\"}" \
                "$http_url/api/v1/chat" >/dev/null; then
                shown=0
                for _ in $(seq 1 40); do
                  capture
                  st="$(status_line)"
                  after="$(awk -v m="$other_msg" -v s="$st" '
                    { line = $0; gsub(/^[ \t]+|[ \t]+$/, "", line) }
                    line == m { seen = 1; n = 0; next }
                    seen && $0 == s { exit }
                    seen && $0 ~ /[^[:space:]─-]/ { n++ }
                    END { print n + 0 }' "$screen_file")"
                  if [[ "${after:-0}" -gt 0 ]]; then shown=1; break; fi
                  sleep 0.25
                done
                if [[ $shown -eq 1 ]]; then
                  pass "$step" "user line and reply shown"
                else
                  tui_fail "the HTTP turn did not appear in the TUI"
                fi
              else
                fail "$step" "the HTTP turn failed"
              fi
            fi
            ;;
          exited) tui_fail "TUI exited while waiting for the reply" ;;
          error) tui_fail "error line while waiting for the reply: $(bad_lines | head -n 1 | sed 's/^ *//')" ;;
          timeout) tui_fail "no reply${tui_want:+ containing \"$tui_want\"} after ${TUI_REPLY_TIMEOUT}s (status: ${st:-none})" ;;
        esac
      fi
      ;;
  esac
  tmux_ kill-session -t "$TMUX_SESSION" >/dev/null 2>&1 || true
fi

echo "openclaw-e2e: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
