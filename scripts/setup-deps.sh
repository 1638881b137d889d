#!/usr/bin/env bash
# Install the Debian packages moltbot needs to build and test, if they are missing:
# clang + libclang-dev + cmake (llama.cpp, linked in process), libcurl + zlib headers
# (librdkafka), tmux (drives the OpenClaw TUI
# in end-to-end tests), chromium (the chat page in a real browser), nginx + prometheus +
# openssl (checks of the deploy files). Idempotent; quiet when
# everything is present.
set -euo pipefail
need=()
command -v clang >/dev/null || need+=(clang)
command -v cmake >/dev/null || need+=(cmake)
[ -n "$(ls /usr/lib/llvm-*/lib/libclang*.so* 2>/dev/null | head -1)" ] || need+=(libclang-dev)
# librdkafka (the Kafka bus) is built from source by rdkafka-sys: it includes curl's and
# zlib's headers.
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || need+=(libcurl4-openssl-dev)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
if [ "${1:-}" = "--test" ]; then
  command -v tmux >/dev/null || need+=(tmux)
  command -v curl >/dev/null || need+=(curl)
  command -v chromium >/dev/null || need+=(chromium)
  # Deployment checks (scripts/check-deploy.sh): nginx -t, promtool, a self-signed cert.
  [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx)
  command -v promtool >/dev/null || need+=(prometheus)
  command -v openssl >/dev/null || need+=(openssl)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
