#!/usr/bin/env bash
# CI: `helm package` charts/panreduce into a temporary folder, then lint and render the PACKAGE
# (not the folder), strictly, so what a facility installs from the .tgz is what was checked:
# the README, values.schema.json and templates must all be in it. Prints the package's sha256.
#   scripts/chart-package.sh [DEST]   # DEST: keep the .tgz there (default: a temp dir, removed)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
helm="$("$root/scripts/chart-helm.sh")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
dest="${1:-$tmp/dist}"
mkdir -p "$dest"
"$helm" package "$root/charts/panreduce" --destination "$dest" >/dev/null
version="$(awk '/^version:/ {print $2}' "$root/charts/panreduce/Chart.yaml")"
pkg="$dest/panreduce-$version.tgz"
test -s "$pkg" || { echo "chart-package: no $pkg" >&2; exit 1; }
tar -tzf "$pkg" >"$tmp/files.txt"
for f in Chart.yaml values.yaml values.schema.json README.md templates/NOTES.txt; do
  grep -qx "panreduce/$f" "$tmp/files.txt" || { echo "chart-package: $f is missing from the package" >&2; exit 1; }
done
values="$root/charts/panreduce/ci/tokens-values.yaml"
"$helm" lint --strict "$pkg" -f "$values" >"$tmp/lint.txt" || { cat "$tmp/lint.txt" >&2; exit 1; }
"$helm" template panreduce "$pkg" -f "$values" --kube-version 1.37.0 >"$tmp/render.yaml"
# a values typo must still be refused by the packaged schema
if "$helm" template panreduce "$pkg" -f "$values" --kube-version 1.37.0 --set image.pullPolicyy=Always >/dev/null 2>&1; then
  echo "chart-package: the packaged chart accepts an unknown value (schema not applied)" >&2; exit 1
fi
echo "chart-package: $(basename "$pkg") sha256 $(sha256sum "$pkg" | cut -d' ' -f1), $(grep -c '^kind:' "$tmp/render.yaml") objects, lint --strict passed"
