"""The container's smoke check (stdlib only, run on the host): wait for /health, search, and load
every result's photo. Prints a JSON summary; exits 1 with the reason on any failure."""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

IMAGE_MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG": "png", b"RIFF": "webp", b"GIF8": "gif"}


def get(url: str, data: dict | None = None, timeout: float = 60) -> tuple[int, str, bytes]:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read()


def wait_health(base: str, timeout: float, alive) -> tuple[dict, float]:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            status, _, body = get(base + "/health", timeout=5)
            if status == 200:
                return json.loads(body), time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if not alive():
            raise SystemExit("the container exited before /health answered")
        time.sleep(2)
    raise SystemExit(f"/health did not answer within {timeout:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    ap.add_argument("--query", default="black dress")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for /health")
    ap.add_argument("--alive-file", help="a file whose removal means the container died (set by smoke.sh)")
    args = ap.parse_args()
    import os

    alive = (lambda: os.path.exists(args.alive_file)) if args.alive_file else (lambda: True)
    health, waited = wait_health(args.url, args.timeout, alive)
    t0 = time.monotonic()
    status, _, body = get(args.url + "/search", {"query": args.query, "k": args.k})
    took = time.monotonic() - t0
    results = json.loads(body)["results"]
    if status != 200 or not results:
        raise SystemExit(f"/search {args.query!r}: status {status}, {len(results)} results")
    photos = {}
    for hit in results:
        if not hit.get("image_url"):
            raise SystemExit(f"item {hit['id']} has no image_url: the catalog's photos are not reachable in the container")
        try:
            status, ctype, data = get(args.url + hit["image_url"])
        except urllib.error.HTTPError as err:
            raise SystemExit(f"{hit['image_url']}: HTTP {err.code}") from None
        kind = next((k for magic, k in IMAGE_MAGIC.items() if data.startswith(magic)), None)
        if status != 200 or not ctype.startswith("image/") or kind is None:
            raise SystemExit(f"{hit['image_url']}: status {status}, {ctype!r}, {len(data)} bytes, not an image")
        photos[hit["id"]] = len(data)
    print(json.dumps({"health_after_s": round(waited, 1), "items": health.get("items", health.get("index", {})),
                      "query": args.query, "search_s": round(took, 2), "results": len(results),
                      "top": [h["title"] for h in results[:3]], "photos_loaded": len(photos),
                      "photo_bytes": sum(photos.values()), "versions": health.get("versions")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
