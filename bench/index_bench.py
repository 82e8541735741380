"""Index speed and quality: single-query p50/p99, batch QPS, build time, memory, recall@10 vs exact.

    python bench/index_bench.py --index var/hm/index                 # the real catalog's index
    python bench/index_bench.py --synthetic 1000000 --dim 256         # clustered synthetic vectors
    python bench/index_bench.py --synthetic 1000000 --dim 512 --nprobe 8 16 32

Synthetic queries are fresh points from the same clusters ("ordinary") and midpoints of two
clusters ("between", the way text queries sit among image vectors). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np

from retrieval.index import IndexParams, VectorIndex


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
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    out: dict = {}

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
