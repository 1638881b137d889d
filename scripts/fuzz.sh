#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in crates/moltbot-fuzz with libFuzzer (cargo-fuzz,
# nightly toolchain), each for a bounded time. The test suite runs the same targets on
# stable over their seeds and deterministic mutants (crates/moltbot-fuzz/tests/bounded.rs);
# this is the deeper, nightly run.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, all targets)
#
# Installs cargo-fuzz with cargo when it is missing. The corpus grows in
# target/fuzz-corpus/<target> (the seeds in fuzz/seeds/<target> are read, never written);
# crashes land in fuzz/artifacts/<target>/ and make the script exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(http_request ws_frame webhook config intents skill gguf)
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/moltbot/target}
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz >&2
fi
# llama.cpp and the other C/C++ parts are not instrumented; AddressSanitizer stays off so
# the Rust side runs at full speed (the targets check behaviour, and Rust is memory-safe).
FLAGS=(--sanitizer none --release --fuzz-dir fuzz)
cargo +nightly fuzz build "${FLAGS[@]}" >&2
failed=0
for t in "${TARGETS[@]}"; do
  corpus=target/fuzz-corpus/$t
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  echo "== $t: $SECS s" >&2
  log=target/fuzz-corpus/$t.log
  if cargo +nightly fuzz run "${FLAGS[@]}" "$t" "$corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$SECS" -rss_limit_mb=4096 -timeout=30 -max_len=65536 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1; then
    grep -E "^#[0-9]+.*(DONE|pulse)" "$log" | tail -1 >&2 || true
  else
    failed=1
    echo "fuzz.sh: $t FAILED; see $log and fuzz/artifacts/$t/" >&2
    grep -E "panicked|ERROR|SUMMARY" "$log" | head -5 >&2 || true
  fi
done
exit $failed
