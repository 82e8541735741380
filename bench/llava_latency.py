"""Latency of LLaVA rationales as a shopper sees them: POST /search/stream on a real `whyrec serve`
process (eval/server.py), k results, 1 and 4 closed-loop clients.

For every request it records, from the client's side:
- `results_ms`: time to the ranked results (the `results` event);
- `first_ms`: time to the first rationale;
- `all_ms`: time to all rationales (the `done` event);
and, as the baseline "results as fast as today", POST /search with explain=false. The server runs
the llava explainer (`--model`: the shipped adapter data/demo/llava, another adapter, or the untuned
`tiny-offline` base), its explanation cache off (every rationale is really made) and distinct
queries. Offline item texts come from `--item-text` (default: <index dir>/item_text.jsonl, written
by `whyrec index describe`); items without one are generated live up to `--live-items` per
response, the rest fall back to the grounded template with the reason. The JSON says how many
rationales came from each path, and the machine's load average while measuring.

    python bench/llava_latency.py --config configs/hm.yaml [--data-root /work/main] --model data/demo/llava \\
        [--item-text FILE] [--live-items 0] [--clients 1,4] [--requests 8]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eval.server import sse_events  # noqa: E402 - after the repo is on the path


def read_stream(client: httpx.Client, query: str, k: int) -> dict:
    """One /search/stream request: event times (ms) and the rationales' sources."""
    t0 = time.perf_counter()
    out: dict = {"results_ms": None, "first_ms": None, "all_ms": None, "sources": []}
    with client.stream("POST", "/search/stream", json={"query": query, "k": k}) as r:
        r.raise_for_status()
        for event, body in sse_events(r):
            ms = (time.perf_counter() - t0) * 1000
            if event == "results":
                out["results_ms"] = ms
            elif event == "rationale":
                out["first_ms"] = out["first_ms"] or ms
                out["sources"].append(source(body["rationale"]))
            elif event == "done":
                out["all_ms"] = ms
    return out


def source(r: dict) -> str:
    """Where a rationale came from: cached item text, live generation, or a fallback (and why)."""
    if r["backend"] == "llava" and not r["fallback_reason"]:
        return "llava: composed with cached item text" if any(f.startswith("item text:") for f in r["facts_used"]) else "llava: live"
    reason = r["fallback_reason"] or ""
    if "live budget" in reason:
        return "fallback: not cached, over the live budget"
    return "fallback: " + reason.split(":")[0]


def pct(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return {}
    return {"p50": round(float(np.percentile(v, 50)), 1), "p99": round(float(np.percentile(v, 99)), 1),
            "mean": round(float(v.mean()), 1), "n": int(len(v))}


def run_level(url: str, queries: list[str], clients: int, per_client: int, k: int) -> dict:
    rows: list[dict] = []
    plain: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def worker(w: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as c:
            for j in range(per_client):
                n = w * per_client + j
                q, other = queries[2 * n % len(queries)], queries[(2 * n + 1) % len(queries)]  # distinct: no query cache helps
                try:
                    t0 = time.perf_counter()
                    c.post("/search", json={"query": other, "k": k, "explain": False}).raise_for_status()
                    base = (time.perf_counter() - t0) * 1000
                    row = read_stream(c, q, k)
                except httpx.HTTPError as err:
                    with lock:
                        errors.append(str(err))
                    continue
                with lock:
                    plain.append(base)
                    rows.append(row)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts: dict[str, int] = {}
    for r in rows:
        for s in r["sources"]:
            counts[s] = counts.get(s, 0) + 1
    return {"clients": clients, "requests": len(rows), "errors": len(errors), "seconds": round(time.perf_counter() - t0, 1),
            "search_no_explain_ms": pct(plain), "results_ms": pct([r["results_ms"] for r in rows]),
            "first_rationale_ms": pct([r["first_ms"] for r in rows]), "all_rationales_ms": pct([r["all_ms"] for r in rows]),
            "rationale_sources": counts, "loadavg_before_after": [round(load0[0], 2), round(os.getloadavg()[0], 2)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/hm.yaml")
    ap.add_argument("--data-root", help="resolve the config's relative catalog, index and head paths under this folder "
                                        "(e.g. /work/main, where var/hm was imported)")
    ap.add_argument("--model", default="data/demo/llava", help="adapter / merged dir / preset (tiny-offline = the untuned base)")
    ap.add_argument("--cache-dir", help="model cache for the base (default: the preset's var/cache/models)")
    ap.add_argument("--item-text", help="offline item texts (default: <index dir>/item_text.jsonl)")
    ap.add_argument("--live-items", type=int, default=0, help="items per response generated live when not cached")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--clients", default="1,4")
    ap.add_argument("--requests", type=int, default=8, help="requests per client and level")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-warmup", action="store_true", help="skip the unmeasured first request (slow live runs)")
    ap.add_argument("--log", default="var/bench/llava_latency.server.log")
    args = ap.parse_args(argv)

    from bench.load_test import shopper_queries
    from eval.server import start_server
    from retrieval.config import load_yaml

    cfg = load_yaml(args.config)
    if args.data_root:
        for sec, key in (("catalog", "dir"), ("index", "dir"), ("encoder", "heads"), ("encoder", "category_head")):
            value = (cfg.get(sec) or {}).get(key)
            if value and not os.path.isabs(value):
                cfg[sec][key] = str(Path(args.data_root) / value)
    options = {"model": args.model, "settings": {"max_new_tokens": args.max_new_tokens, "batch_size": args.k}}
    if args.cache_dir:
        options["cache_dir"] = args.cache_dir
    if args.item_text:
        options["item_text"] = args.item_text
    # /recommend is not measured: serve the cheapest recommender (no ranker training at start-up)
    cfg["recommend"] = {"model": "popularity", "item_vectors": None, "models": {"popularity": {"kind": "popularity"}}}
    cfg["serve"] = {**(cfg.get("serve") or {}), "explainer": "llava", "explainer_options": options,
                    "explain_cache_size": 0, "llava_live_items": args.live_items, "llava_concurrency": 1}
    levels = [int(c) for c in args.clients.split(",")]
    queries = shopper_queries(2 * sum(levels) * args.requests + 8, args.seed)
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "llava_latency.yaml"
        config.write_text(yaml.safe_dump(cfg))
        t0 = time.time()
        proc, url = start_server(str(config), timeout=900, log_path=args.log)
        try:
            start_s = round(time.time() - t0, 1)
            if not args.no_warmup:
                with httpx.Client(base_url=url, timeout=600) as c:  # warm: first request loads lazy parts
                    read_stream(c, queries[-1], args.k)
            used = 0
            out = []
            for n in levels:
                out.append(run_level(url, queries[used:], n, args.requests, args.k))
                used += 2 * n * args.requests
        finally:
            proc.terminate()
            proc.wait(60)
    print(json.dumps({"config": args.config, "catalog": cfg["catalog"].get("dir"), "index": cfg["index"].get("dir"),
                      "model": args.model, "live_items": args.live_items, "k": args.k, "max_new_tokens": args.max_new_tokens,
                      "server_start_s": start_s, "cpus": os.cpu_count(), "levels": out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
