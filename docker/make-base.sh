#!/usr/bin/env bash
# The local base image localhost/whyrec-base:bookworm: Debian bookworm (python3.11) made with
# debootstrap from Debian's packages, since no registry for base images can be reached here.
# Made once and kept in podman's storage; FORCE=1 makes it again.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
podman=("bash" "$here/podman.sh")
tag=${BASE_IMAGE:-localhost/whyrec-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [[ -z "${FORCE:-}" ]] && "${podman[@]}" image exists "$tag"; then
  echo "base image $tag: cached"; exit 0
fi
work=$(mktemp -d "${PODMAN_ROOT:-/var/tmp/whyrec-podman}/base.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
# minbase + what the service needs at run time: python3.11 with venv, OpenMP for LightGBM/faiss,
# CA certificates for pip, passwd for the non-root user
nice -n 10 debootstrap --variant=minbase \
  --include=python3,python3-venv,libgomp1,ca-certificates,passwd \
  bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log"; exit 1; }
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" >"$work/rootfs/etc/apt/sources.list"
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
tar -C "$work/rootfs" --numeric-owner -cf "$work/rootfs.tar" .
"${podman[@]}" import -q --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' "$work/rootfs.tar" "$tag" >/dev/null
echo "base image $tag: made in $(( $(date +%s) - start )) s ($("${podman[@]}" image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec))"
