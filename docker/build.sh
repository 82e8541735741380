#!/usr/bin/env bash
# Build the whyrec image with podman (docker/podman.sh) on the local base image (docker/make-base.sh).
# torch: the CPU wheel that lies on this machine's disk (/opt/wheels) is mounted into the build, since
# the CPU wheel index cannot be reached from here; without it the Dockerfile's default (that index) is used.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
podman=("bash" "$here/podman.sh")
tag=${IMAGE:-localhost/whyrec:latest}
args=(--network host --format docker --layers -t "$tag"
      --build-arg "BASE_IMAGE=${BASE_IMAGE:-localhost/whyrec-base:bookworm}"
      --build-arg "EXTRAS=${EXTRAS:-}")
wheel=$(ls "${TORCH_WHEELS:-/opt/wheels}"/torch-*+cpu-cp311-*linux*_x86_64.whl 2>/dev/null | sort -V | tail -1 || true)
if [[ -n "$wheel" ]]; then
  args+=(-v "$(dirname "$wheel"):/wheels:ro" --build-arg "TORCH=/wheels/$(basename "$wheel")" --build-arg TORCH_INDEX_URL=)
  echo "torch: $(basename "$wheel") (CPU, from this disk)"
fi
read -ra extra <<<"${BUILD_FLAGS:-}"  # e.g. BUILD_FLAGS=--no-cache for a cold build
args+=(${extra[@]+"${extra[@]}"})
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}  # the host's CAs: the network here re-signs TLS
if [[ -f "$ca" ]]; then
  args+=(-v "$ca:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi
start=$(date +%s)
echo "building $tag (load: $(cut -d' ' -f1-3 /proc/loadavg))"
nice -n 10 "${podman[@]}" build "${args[@]}" "$repo"
# drop what the previous build left untagged (its source layers); the dependency layer stays cached
"${podman[@]}" image prune -f >/dev/null
echo "built $tag in $(( $(date +%s) - start )) s; size $("${podman[@]}" image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec)" \
  "(load: $(cut -d' ' -f1-3 /proc/loadavg))"
