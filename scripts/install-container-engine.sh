#!/bin/sh
# Install the container engine the image targets use (podman 4.3, buildah, runc, debootstrap,
# netavark/CNI plugins ... from Debian's apt; root only) and write this repository's podman
# settings into .tools/containers/ (vfs storage, runc, cgroupfs, file events; docs/deploy.md).
# Prints the two variables to export for running podman by hand with these settings:
#
#     eval "$(scripts/install-container-engine.sh)"
#     podman images
#
# Starts no daemon (podman has none) and changes no system-wide podman setting.
set -eu
cd "$(dirname "$0")/.."
exec python3 scripts/images.py setup
