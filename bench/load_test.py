"""Bounded HTTP load test of a whyrec server on 127.0.0.1, from a second process.

Starts `whyrec serve --config CONFIG` as its own process (or uses --url), then drives it with
closed-loop clients for --duration seconds per scenario and concurrency level:

- search:                POST /search, explain=false
- search_filter:         POST /search with filters (colour / category / price, in turn), explain=false
- search_explain:        POST /search, explain=true (grounded rationale per result)
- search_filter_explain: POST /search with filters, explain=true
- recommend:             POST /recommend {user_id}, explain=true (rationales point at the history)
- similar:               GET /items/{id}/similar (explain=false)
- explain:               POST /explain {item_id, query, backend} (opt-in; --backend llava for the tuned model)

When it starts the server itself it also reports the start time and memory: the server's peak
RSS while starting (the kernel's high-water mark, VmHWM), its RSS once up, and, per entry of
--reload-changes (default "all"), one POST /admin/reload: its time, the peak RSS during it (the
mark is reset before each reload through /proc/PID/clear_refs), and the RSS right after and
RELEASE_WAIT seconds after (the old engine must be gone). Before each reload the entry names what
is republished on disk, the same bytes under new inodes: none, catalog, index or all. A reload
takes over from the old engine what did not change, so only what changed is held twice.

Queries are drawn from the vocabulary ("navy striped shirt for men", ...) with a fixed seed and
are all distinct within a run, and the server is started with its explanation cache off, so
every rationale is really written (pass --cache to measure with the LRU cache on).

    python bench/load_test.py --config configs/hm.yaml [--duration 30] [--concurrency 1,4]

Prints one JSON object: p50 / p90 / p99 / mean latency (ms), requests/s and errors per scenario,
and the memory and reload figures.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = ("search", "search_filter", "search_explain", "search_filter_explain", "recommend", "similar", "explain")
DEFAULT_SCENARIOS = ("search", "search_filter", "search_explain", "search_filter_explain", "recommend", "similar")
# filters taken in turn (H&M words; a catalog without them answers with fewer hits, still 200)
FILTERS = ({"colour": "black"}, {"category": "Ladieswear"}, {"price_max": 0.03}, {"category": "Menswear", "colour": "blue"},
           {"colour": "white", "price_min": 0.01})
RELEASE_WAIT = 15.0  # seconds after a reload before the RSS is read again (the server collects at 10 s)
ADMIN_KEY = "load-test-admin-key"


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MB (Linux /proc)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def reset_peak(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark of a process (writing 5 to clear_refs); False where refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def republish(directory: str | Path) -> None:
    """Rewrite every file under `directory` with its own bytes through the atomic-write helper (a
    new inode each), as an import or an index build would: a reload sees it as changed."""
    from retrieval.artifacts import atomic_path, is_partial

    for f in sorted(Path(directory).rglob("*")):
        if f.is_file() and not is_partial(f):
            with atomic_path(f) as tmp:
                shutil.copyfile(f, tmp)


def reload_memory(url: str, pid: int, changes: list[str], config: str) -> list[dict]:
    """Time each POST /admin/reload and read the server's memory around it; before each, republish
    what `changes` names (none | catalog | index | all)."""
    from retrieval.config import load_yaml

    cfg = load_yaml(config)
    out = []
    for change in changes:
        if change in ("catalog", "all"):
            republish(cfg["catalog"]["dir"])
        if change in ("index", "all"):
            republish(cfg["index"]["dir"])
        before = proc_memory_mb(pid)["VmRSS"]
        reset = reset_peak(pid)
        t0 = time.perf_counter()
        r = httpx.post(url + "/admin/reload", headers={"X-API-Key": ADMIN_KEY}, timeout=1800)
        took = time.perf_counter() - t0
        mem = proc_memory_mb(pid)
        time.sleep(RELEASE_WAIT)
        out.append({"changed": change, "status": r.status_code, "seconds": round(took, 2), "rss_before_mb": before,
                    "peak_rss_during_mb": mem["VmHWM"] if reset else None, "rss_right_after_mb": mem["VmRSS"],
                    f"rss_{RELEASE_WAIT:.0f}s_after_mb": proc_memory_mb(pid)["VmRSS"], "load_average": round(os.getloadavg()[0], 2)})
        print(json.dumps(out[-1]), file=sys.stderr)
    return out


def shopper_queries(n: int, seed: int = 0) -> list[str]:
    """`n` distinct shopper-style queries built from the shared vocabulary's phrases."""
    from retrieval.vocabulary import SYNONYMS

    rng = random.Random(seed)
    colours = [p for ps in SYNONYMS["colour"].values() for p in ps[:2]]
    types = [p for ps in SYNONYMS["product_type"].values() for p in ps[:2]]
    patterns = [p for ps in SYNONYMS["pattern"].values() for p in ps[:1]] + [""] * 8
    extras = ["for women", "for men", "for kids", "for the gym", "for summer", "for a party", "not black", "without lace",
              "in cotton", "slim fit", "oversized", "high waisted", ""] + [""] * 8
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        words = [rng.choice(colours), rng.choice(patterns), rng.choice(types), rng.choice(extras)]
        q = " ".join(w for w in words if w)
        if q not in seen:
            seen.add(q)
            out.append(q)
    return out


def start_server(config: str, cache: bool, log_path: Path, timeout: float = 1800):
    from eval.server import start_server as serve

    env = {"WHYREC_LOG_LEVEL": "warning", "WHYREC_ADMIN_KEY": ADMIN_KEY}
    if not cache:
        env["WHYREC_EXPLAIN_CACHE_SIZE"] = "0"
    return serve(config, timeout, env, log_path)


def request_for(scenario: str, i: int, queries: list[str], users: list[str], k: int, items: list[str], backend: str) -> tuple[str, dict]:
    if scenario == "explain":
        return "/explain", {"item_id": items[(i * 7919) % len(items)], "query": queries[i % len(queries)], "backend": backend}
    if scenario == "search":
        return "/search", {"query": queries[i % len(queries)], "k": k, "explain": False}
    if scenario == "search_explain":
        return "/search", {"query": queries[i % len(queries)], "k": k, "explain": True}
    if scenario in ("search_filter", "search_filter_explain"):
        return "/search", {"query": queries[i % len(queries)], "k": k, "explain": scenario.endswith("explain"),
                           "filters": FILTERS[i % len(FILTERS)]}
    if scenario == "similar":
        return f"/items/{items[(i * 7919) % len(items)]}/similar", {"k": k}
    return "/recommend", {"user_id": users[i % len(users)], "k": k, "explain": True}


def run_scenario(url: str, scenario: str, concurrency: int, duration: float, queries: list[str], users: list[str], k: int,
                 warmup: float, offset: int, items: list[str] = (), backend: str = "grounded") -> dict:
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    fallbacks: list[str] = []
    server_ms: list[float] = []  # the server's own `took_ms` (no HTTP, no JSON), where the response has one
    counter = iter(range(offset, 10**9))
    lock = threading.Lock()
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + duration

    def worker(slot: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while True:
                now = time.perf_counter()
                if now >= end:
                    return
                with lock:
                    i = next(counter)
                path, body = request_for(scenario, i, queries, users, k, items, backend)
                t0 = time.perf_counter()
                try:
                    r = client.get(path, params=body) if scenario == "similar" else client.post(path, json=body)
                    ok = r.status_code == 200
                    if not ok:
                        errors.append(f"{r.status_code}: {r.text[:120]}")
                    elif scenario == "explain" and r.json()["rationale"].get("fallback_reason"):
                        fallbacks.append(r.json()["rationale"]["fallback_reason"][:120])
                    elif scenario != "explain" and t0 >= measure_from:
                        server_ms.append(r.json()["took_ms"])
                except httpx.HTTPError as err:
                    ok = False
                    errors.append(repr(err))
                t1 = time.perf_counter()
                if ok and t0 >= measure_from and t1 <= end:
                    latencies[slot].append((t1 - t0) * 1000)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = np.array([x for per in latencies for x in per])
    extra = {"backend": backend, "fallbacks": len(fallbacks), "fallback_examples": fallbacks[:3]} if scenario == "explain" else {}
    return {"scenario": scenario, "concurrency": concurrency, **extra, "requests": int(len(lat)), "errors": len(errors),
            "error_examples": errors[:3], "requests_per_s": round(len(lat) / duration, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
            "p90_ms": round(float(np.percentile(lat, 90)), 2) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
            "mean_ms": round(float(lat.mean()), 2) if len(lat) else None,
            "server_p50_ms": round(float(np.percentile(server_ms, 50)), 2) if server_ms else None,
            "server_p99_ms": round(float(np.percentile(server_ms, 99)), 2) if server_ms else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/hm.yaml")
    ap.add_argument("--url", help="an already running server (default: start one from --config)")
    ap.add_argument("--duration", type=float, default=30.0, help="measured seconds per scenario and concurrency")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--concurrency", default="1,4", help="comma-separated closed-loop client counts")
    ap.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS), help=f"comma-separated, from {','.join(SCENARIOS)}")
    ap.add_argument("--backend", default="grounded", help="explainer backend for the explain scenario (grounded | llava)")
    ap.add_argument("-k", type=int, default=12)
    ap.add_argument("--cache", action="store_true", help="leave the server's explanation cache on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reload-changes", default="all",
                    help="POST /admin/reload after the scenarios (own server only), once per comma-separated entry, after "
                         "republishing on disk: none | catalog | index | all ('' = no reload)")
    args = ap.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS}")
    if not args.url and not Path(args.config).exists():
        raise SystemExit(f"config {args.config} not found")

    proc = None
    startup: dict = {}
    if args.url:
        url = args.url
    else:
        log = REPO / "var" / "bench" / "load_test_server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        proc, url = start_server(args.config, args.cache, log)
        mem = proc_memory_mb(proc.pid)
        startup = {"start_seconds": round(time.time() - t0, 1), "peak_rss_start_mb": mem["VmHWM"], "rss_after_start_mb": mem["VmRSS"],
                   "load_average": round(os.getloadavg()[0], 2)}
        print(f"server up: {json.dumps(startup)} at {url}", file=sys.stderr)
    try:
        health = httpx.get(url + "/health").json()
        users = [u["id"] for u in httpx.get(url + "/users", params={"limit": 1000}).json()]
        items = [h["id"] for q in ("dress", "shirt", "trousers", "shoes", "bag", "sweater", "jacket", "top")
                 for h in httpx.post(url + "/search", json={"query": q, "k": 100, "explain": False}, timeout=60).json()["results"]]
        levels = [int(c) for c in args.concurrency.split(",")]
        per_run = int(max(levels) * (args.duration + args.warmup) * 200)  # more than a run can use: every query distinct
        queries = shopper_queries(per_run * len(scenarios) * len(levels), args.seed)
        results = []
        offset = 0
        for scenario in scenarios:
            for c in levels:
                print(f"{scenario} x{c} for {args.duration:.0f}s (load average {os.getloadavg()[0]:.2f}) ...", file=sys.stderr)
                res = run_scenario(url, scenario, c, args.duration, queries, users, args.k, args.warmup, offset, items, args.backend)
                offset += per_run
                print(json.dumps(res), file=sys.stderr)
                results.append(res)
        changes = [c.strip() for c in args.reload_changes.split(",") if c.strip()]
        unknown = set(changes) - {"none", "catalog", "index", "all"}
        if unknown:
            raise SystemExit(f"--reload-changes: unknown {sorted(unknown)}; use none, catalog, index or all")
        reloads = reload_memory(url, proc.pid, changes, args.config) if proc is not None and changes else []
        print(json.dumps({
            "config": args.config, "url": url, "items": health["items"], "index_size": health["index_size"],
            "encoder": health["encoder"], "explainer": health["explainer"], "explain_cache": args.cache, "k": args.k,
            "duration_s": args.duration, "cpus": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "shoppers_used": len(users), "startup": startup, "reloads": reloads,
            "rss_at_end_mb": proc_memory_mb(proc.pid)["VmRSS"] if proc is not None else None, "results": results,
        }, indent=2))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
