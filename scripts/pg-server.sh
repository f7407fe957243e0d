#!/usr/bin/env bash
# A throw-away PostgreSQL server on loopback for the tests of the gateway's PostgreSQL
# job store. Usage: pg-server.sh start|stop|status|env
# start prints `export PANREDUCE_TEST_PG_DSN=...`. Installs Debian's postgresql if missing
# (root with apt-get). Data lives under $PG_DIR (default /tmp/panreduce-pg), run as the
# postgres user (PostgreSQL refuses to run as root).
set -euo pipefail
DIR="${PG_DIR:-/tmp/panreduce-pg}"
PORT="${PG_PORT:-55432}"
DSN="postgresql://panreduce@127.0.0.1:${PORT}/panreduce"

bin_dir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && echo "$d"
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install() {
  [ -n "$(bin_dir)" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "pg-server: installing postgresql (apt-get)" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  fi
  [ -n "$(bin_dir)" ] || { echo "pg-server: PostgreSQL is not installed and cannot be installed here" >&2; exit 1; }
}

status() { [ -f "$DIR/data/postmaster.pid" ] && as_pg "$(bin_dir)/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; }

case "${1:-}" in
  start)
    install
    B=$(bin_dir)
    if ! status; then
      mkdir -p "$DIR"
      if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; fi
      if [ ! -f "$DIR/data/PG_VERSION" ]; then
        as_pg "$B/initdb" -D "$DIR/data" -U panreduce --auth=trust -E UTF8 >/dev/null
      fi
      as_pg "$B/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w -t 30 \
        -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" start >/dev/null
      as_pg "$B/createdb" -h 127.0.0.1 -p "$PORT" -U panreduce panreduce 2>/dev/null || true
    fi
    echo "export PANREDUCE_TEST_PG_DSN=$DSN"
    ;;
  stop)
    if status; then as_pg "$(bin_dir)/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null; fi
    ;;
  status) status ;;
  env) echo "export PANREDUCE_TEST_PG_DSN=$DSN" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
