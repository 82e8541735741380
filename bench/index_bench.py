"""Index speed and quality: single-query p50/p99, batch QPS, build time, memory, recall@10 vs exact.

    python bench/index_bench.py --index var/hm/index                 # the real catalog's index
    python bench/index_bench.py --synthetic 1000000 --dim 256         # clustered synthetic vectors
    python bench/index_bench.py --synthetic 1000000 --dim 512 --nprobe 8 16 32

FAISS against Milvus on the same vectors (`--compare`): each backend is built over them, then
recall@10 against an exact scan and single-query p50/p99, unfiltered and with a filter allowing
`--filter-share` of the items (sorted rows, as the searcher's postings), and the memory each holds:

    python bench/index_bench.py --compare --index /work/main/var/hm/index               # the real 17k H&M vectors
    python bench/index_bench.py --compare --index /work/main/var/hm/index --perturb 1000000   # 1M perturbed copies of them

Synthetic queries are fresh points from the same clusters ("ordinary") and midpoints of two
clusters ("between", the way text queries sit among image vectors); real-vector queries are
midpoints of two items. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import faiss
import numpy as np

from retrieval.index import IndexParams, VectorIndex, build_index, exact_top as exact_rows


def clustered(n: int, d: int, clusters: int, rng: np.random.Generator, centres: np.ndarray | None = None):
    if centres is None:
        centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, 200_000):
        m = min(200_000, n - s)
        x[s : s + m] = centres[rng.integers(0, len(centres), m)] + 0.35 * rng.standard_normal((m, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, centres


def exact_top(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    faiss.omp_set_num_threads(2)
    return flat.search(q, k)[1]


def time_single(index: VectorIndex, q: np.ndarray, k: int) -> dict:
    lat = []
    for v in q:
        t = time.perf_counter()
        index.search(v, k)
        lat.append((time.perf_counter() - t) * 1000)
    lat = np.array(lat[10:])  # warm-up
    return {"p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3)}


def time_batch(index: VectorIndex, q: np.ndarray, k: int, threads: int) -> float:
    index.params.threads = threads
    t = time.perf_counter()
    index.search(q, k)
    qps = len(q) / (time.perf_counter() - t)
    index.params.threads = 1
    return round(qps, 1)


def recall(index: VectorIndex, q: np.ndarray, truth: np.ndarray, k: int) -> float:
    index.params.threads = 2
    _, got = index.search(q, k)
    index.params.threads = 1
    row = {i: n for n, i in enumerate(index.ids)}
    return round(float(np.mean([len(set(t) & {row[g] for g in gs}) / k for t, gs in zip(truth, got)])), 4)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def perturbed(x: np.ndarray, n: int, rng: np.random.Generator, sigma: float = 0.35) -> np.ndarray:
    """n vectors made from real ones: copy i is item i % len(x) plus noise (relative size sigma),
    renormalised; the first len(x) are the real vectors unchanged."""
    d = x.shape[1]
    out = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):
        rows = np.arange(s, min(n, s + 100_000))
        block = x[rows % len(x)] + sigma / np.sqrt(d) * rng.standard_normal((len(rows), d)).astype(np.float32)
        block[rows < len(x)] = x[rows[rows < len(x)]]
        out[rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def tree_rss_mb(pid: int | None = None) -> dict:
    """RSS of this process and of its children (milvus-lite runs its engine as a child process)."""
    import psutil

    me = psutil.Process(pid)
    kids = me.children(recursive=True)
    return {"self_mb": round(me.memory_info().rss / 2**20), "children_mb": round(sum(k.memory_info().rss for k in kids) / 2**20)}


def compare(x: np.ndarray, q: np.ndarray, args, rng: np.random.Generator) -> dict:
    """Build each backend over x; recall@k vs exact and latency, unfiltered and filtered; memory."""
    n, k = len(x), args.k
    ids = [str(i) for i in range(n)]
    allowed = np.sort(rng.choice(n, size=max(k, int(n * args.filter_share)), replace=False)).astype(np.int64)
    truth = exact_rows(x, q, k)
    sub = x[allowed]
    truth_f = allowed[exact_rows(sub, q, k)]
    del sub
    out = {}
    for backend in args.backends:
        before = tree_rss_mb()
        t = time.perf_counter()
        index = build_index(x, ids, IndexParams(backend=backend, factory=args.factory, nprobe=args.nprobe[0], k_factor=args.k_factor,
                                                recall_queries=0))
        build_s = time.perf_counter() - t
        after = tree_rss_mb()
        row = {}
        for name, allow, want in (("unfiltered", None, truth), (f"filter {args.filter_share:.0%}", allowed, truth_f)):
            lat, got = [], []
            for v in q:
                t = time.perf_counter()
                _, hits = index.search(v, k, allow)
                lat.append((time.perf_counter() - t) * 1000)
                got.append([int(h) for h in hits[0]])
            lat = np.array(lat[10:])
            row[name] = {f"recall@{k}": round(float(np.mean([len(set(t.tolist()) & set(g)) / k for t, g in zip(want, got)])), 4),
                         "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3)}
        kind = index.meta.get("factory") or index.meta.get("milvus_index")
        out[backend] = {"index": kind, "build_seconds": round(build_s, 1), "rss_before": before, "rss_after_build": after,
                        "rss_growth_mb": after["self_mb"] - before["self_mb"] + after["children_mb"] - before["children_mb"], **row}
        if hasattr(index, "drop"):
            index.drop()
        del index
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", help="a saved index folder (e.g. var/hm/index)")
    ap.add_argument("--synthetic", type=int, help="number of synthetic vectors")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--factory", default="auto")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16])
    ap.add_argument("--k-factor", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--compare", action="store_true", help="FAISS vs Milvus (--backends) on the same vectors")
    ap.add_argument("--backends", nargs="+", default=["faiss", "milvus"])
    ap.add_argument("--perturb", type=int, help="with --index: this many vectors made from the real ones (perturbed copies)")
    ap.add_argument("--filter-share", type=float, default=0.05, help="--compare: share of items a filter allows")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    out: dict = {}

    if args.compare:
        if not args.index:
            ap.error("--compare needs --index (the real vectors)")
        real = np.asarray(VectorIndex.load(args.index, mmap=False).vectors, np.float32)
        x = perturbed(real, args.perturb, rng) if args.perturb else np.ascontiguousarray(real)
        a, b = x[rng.integers(0, len(x), args.queries)], x[rng.integers(0, len(x), args.queries)]
        q = np.ascontiguousarray((a + b) / np.linalg.norm(a + b, axis=1, keepdims=True), np.float32)
        out.update(source=args.index, n=len(x), dim=x.shape[1], perturbed=bool(args.perturb), queries=f"{len(q)} midpoints of two items",
                   filter_share=args.filter_share, load_average=[round(v, 2) for v in os.getloadavg()])
        out["backends"] = compare(x, q, args, rng)
        out["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
        print(json.dumps(out, indent=1))
        return
    if args.index:
        t = time.perf_counter()
        index = VectorIndex.load(args.index, mmap=False)
        x = np.asarray(index.vectors)
        out.update(source=args.index, n=len(index), dim=index.dim, factory=index.meta["factory"], load_seconds=round(time.perf_counter() - t, 2),
                   build_seconds=index.meta.get("build_seconds"), recall_at_10_stored=index.meta.get("recall_at_10"))
        a, b = x[rng.integers(0, len(x), args.queries)], x[rng.integers(0, len(x), args.queries)]
        sets = {"mixed item pairs": (a + b) / np.linalg.norm(a + b, axis=1, keepdims=True)}
    else:
        if not args.synthetic:
            ap.error("give --index or --synthetic N")
        x, centres = clustered(args.synthetic, args.dim, args.clusters, rng)
        ordinary, _ = clustered(args.queries, args.dim, args.clusters, rng, centres)
        c1, c2 = centres[rng.integers(0, args.clusters, args.queries)], centres[rng.integers(0, args.clusters, args.queries)]
        between = (c1 + c2) + 0.35 * rng.standard_normal(c1.shape).astype(np.float32)
        between /= np.linalg.norm(between, axis=1, keepdims=True)
        sets = {"ordinary": ordinary, "between clusters": between.astype(np.float32)}
        before = rss_mb()
        t = time.perf_counter()
        index = VectorIndex.build(x, [str(i) for i in range(len(x))], IndexParams(factory=args.factory, k_factor=args.k_factor, recall_queries=200))
        out.update(source="synthetic clustered", n=len(x), dim=args.dim, factory=index.meta["factory"], build_seconds=round(time.perf_counter() - t, 1),
                   recall_at_10_stored=index.meta["recall_at_10"], rss_growth_mb=round(rss_mb() - before, 0))
    out["index_bytes_mb"] = round(len(faiss.serialize_index(index.index)) / 2**20, 1)
    truth = {name: exact_top(np.ascontiguousarray(x), q, args.k) for name, q in sets.items()}
    out["runs"] = []
    for nprobe in args.nprobe:
        index.params.nprobe = nprobe
        index._configure()
        for name, q in sets.items():
            out["runs"].append({"nprobe": nprobe, "queries": name, f"recall@{args.k}": recall(index, q, truth[name], args.k),
                                **time_single(index, q[:300], args.k), "batch_qps_2_threads": time_batch(index, q, args.k, 2)})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
