#!/bin/sh
# Container entrypoint: put models baked into the image (BAKE_MODELS=1) into the data
# volume's model cache, never overwriting what is there, then run moltbot with the
# container's arguments.
set -eu
data="${MOLTBOT_DATA__DIR:-/data}"
if [ -n "$(ls -A /opt/moltbot/models 2>/dev/null)" ]; then
  mkdir -p "$data/models"
  cp -Rn /opt/moltbot/models/. "$data/models/"
fi
exec /usr/local/bin/moltbot "$@"
