#!/usr/bin/env bash
# podman as this project runs it: vfs storage under $PODMAN_ROOT (default /var/tmp/whyrec-podman),
# cgroupfs, runc and host networking (docker/containers.conf). Usage: docker/podman.sh ARGS...
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=${PODMAN_ROOT:-/var/tmp/whyrec-podman}
mkdir -p "$root/storage" "$root/run" "$root/tmp"
export CONTAINERS_CONF="$here/containers.conf"
export TMPDIR="$root/tmp"  # vfs copies whole layers through TMPDIR: keep them off a small /tmp
exec podman --root "$root/storage" --runroot "$root/run" --storage-driver vfs \
  --cgroup-manager cgroupfs --runtime runc "$@"
