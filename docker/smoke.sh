#!/usr/bin/env bash
# Start the whyrec image, wait for /health, search, load the results' photos, stop and remove it.
#   SMOKE_VAR=host  (default) serve the demo index built on the host (make demo-index), mounted
#                   read-only at /app/var/demo: the deployment the Dockerfile recommends.
#   SMOKE_VAR=image build the demo catalog and index inside the container first, then serve.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
podman=("bash" "$here/podman.sh")
tag=${IMAGE:-localhost/whyrec:latest}
mode=${SMOKE_VAR:-host}
name=whyrec-smoke-$$
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
alive=$(mktemp)
run=(run -d --name "$name" --network host --no-healthcheck -e WHYREC_HOST=127.0.0.1 -e "WHYREC_PORT=$port")
case "$mode" in
  host)
    [[ -f "$repo/var/demo/index/meta.json" || -d "$repo/var/demo/index" ]] \
      || { echo "no var/demo/index on the host: run make demo-index first (or SMOKE_VAR=image)"; exit 1; }
    run+=(-v "$repo/var/demo:/app/var/demo:ro" "$tag");;
  image)
    run+=("$tag" sh -c 'whyrec data import hm data/demo --out var/demo/catalog && whyrec index build --config "$WHYREC_CONFIG" && exec whyrec serve');;
  *) echo "SMOKE_VAR must be host or image, not $mode"; exit 2;;
esac

cleanup() {
  rc=$?
  if [[ $rc -ne 0 ]]; then echo "--- container log (last 40 lines)"; "${podman[@]}" logs --tail 40 "$name" 2>&1 || true; fi
  "${podman[@]}" rm -f -t 5 "$name" >/dev/null 2>&1 || true
  rm -f "$alive"
  exit $rc
}
trap cleanup EXIT
start=$(date +%s)
"${podman[@]}" "${run[@]}" >/dev/null
echo "started $name ($mode var/) on 127.0.0.1:$port (load: $(cut -d' ' -f1-3 /proc/loadavg))"
# the image is the serve install: no training packages, a CPU torch
"${podman[@]}" exec "$name" python -c '
import importlib.util, torch
extra = [m for m in ("mlflow", "bitsandbytes", "peft", "accelerate", "openai", "matplotlib", "deepspeed", "open_clip") if importlib.util.find_spec(m)]
assert not extra, f"training packages in the serve image: {extra}"
assert torch.version.cuda is None, f"a CUDA torch ({torch.version.cuda}) in the image"
print(f"serve install: no training packages; torch {torch.__version__} (CPU)")'
# smoke_check.py fails at once if the container dies while it waits
( while "${podman[@]}" container inspect -f '{{.State.Running}}' "$name" 2>/dev/null | grep -q true; do sleep 5; done; rm -f "$alive" ) &
watcher=$!
python3 "$here/smoke_check.py" --url "http://127.0.0.1:$port" --alive-file "$alive" --timeout "${SMOKE_TIMEOUT:-900}"
kill "$watcher" 2>/dev/null || true
echo "smoke passed in $(( $(date +%s) - start )) s; image $("${podman[@]}" image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec)"
