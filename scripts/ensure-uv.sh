#!/usr/bin/env bash
# Print the path of a uv executable, installing a pinned uv into .tools/ if none is found.
# Needs only python3 (with pip, or root with apt-get to add it).
set -euo pipefail
UV_VERSION="${UV_VERSION:-0.13.9}"
root="$(cd "$(dirname "$0")/.." && pwd)"
local_uv="$root/.tools/uv/bin/uv"
if command -v uv >/dev/null 2>&1; then command -v uv; exit 0; fi
if [ -x "$local_uv" ]; then echo "$local_uv"; exit 0; fi
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || { echo "ensure-uv: $PY not found; install Python >= 3.11" >&2; exit 1; }
if ! "$PY" -m pip --version >/dev/null 2>&1; then
  "$PY" -m ensurepip --upgrade >/dev/null 2>&1 || true
fi
if ! "$PY" -m pip --version >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-uv: installing python3-pip with apt-get" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >&2
  else
    echo "ensure-uv: pip is missing; install it (Debian: apt-get install python3-pip) or uv itself" >&2
    exit 1
  fi
fi
echo "ensure-uv: installing uv $UV_VERSION into .tools/uv" >&2
"$PY" -m pip install --quiet --disable-pip-version-check --target "$root/.tools/uv" "uv==$UV_VERSION" >&2 \
  || "$PY" -m pip install --quiet --break-system-packages --disable-pip-version-check --target "$root/.tools/uv" "uv==$UV_VERSION" >&2
[ -x "$local_uv" ] || { echo "ensure-uv: uv was not installed at $local_uv" >&2; exit 1; }
echo "$local_uv"
