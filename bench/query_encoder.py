"""Query encoder runtimes (`encoder.query_runtime`: torch | onnx | int8): speed per query and
ranking equality against torch, through the real Searcher.

For each runtime: the encoder's time per single query on one thread (p50/p99, tokenising and the
heads included; the runtimes take turns query by query so machine noise falls on all alike), the
cosine of its query vectors to torch's, and, for every query of the given files, the top-10 of
`Searcher.search` compared with torch's: the mean and minimum overlap, the share of identical
top-10 lists (same order) and of identical sets. The query-vector LRU is off.

    OMP_NUM_THREADS=1 python bench/query_encoder.py --config configs/hm.yaml \\
        --queries eval/queries/hm.yaml eval/queries/ikea.yaml eval/queries/shop2.yaml

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np

RUNTIMES = ("torch", "onnx", "int8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/hm.yaml")
    ap.add_argument("--queries", nargs="+", default=["eval/queries/hm.yaml"], help="eval query files (YAML)")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the queries per runtime")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--onnx-dir", help="where the exported models are cached (default: encoder.onnx_dir)")
    args = ap.parse_args()

    import torch

    from eval.search_eval import load_queries
    from retrieval.catalog import Catalog
    from retrieval.config import load_yaml, section
    from retrieval.encoders import EncoderConfig, create_encoder, encode_queries
    from retrieval.index import open_index
    from retrieval.search import CatalogConfig, IndexConfig, SearchConfig, Searcher, load_search_artifacts

    torch.set_num_threads(1)
    cfg = load_yaml(args.config)
    texts = list(dict.fromkeys(q.text for path in args.queries for q in load_queries(path)))
    catalog = Catalog.load(section(cfg, "catalog", CatalogConfig).dir)
    icfg = section(cfg, "index", IndexConfig)
    index = open_index(icfg.dir, replace(icfg.params, threads=1))
    vocab, lexical, fusion = load_search_artifacts(icfg.dir, index)
    scfg = replace(section(cfg, "search", SearchConfig), query_cache_size=0)
    ecfg = replace(section(cfg, "encoder", EncoderConfig), threads=1)
    if args.onnx_dir:
        ecfg = replace(ecfg, onnx_dir=args.onnx_dir)

    runtimes = [r for r in args.runtimes.split(",") if r]
    if runtimes[0] != "torch":
        runtimes.insert(0, "torch")
    searchers, load_s = {}, {}
    for r in runtimes:
        t0 = time.perf_counter()
        enc = create_encoder(replace(ecfg, query_runtime=r))
        encode_queries(enc, ["warm up"])  # loads (and on first use exports) the model
        load_s[r] = round(time.perf_counter() - t0, 2)
        searchers[r] = Searcher(catalog, enc, index, scfg, vocab, lexical, fusion)

    times: dict[str, list[float]] = {r: [] for r in runtimes}
    vecs: dict[str, list[np.ndarray]] = {r: [] for r in runtimes}
    for rep in range(args.repeats):
        for i, text in enumerate(texts):
            for r in runtimes:
                t0 = time.perf_counter()
                v = encode_queries(searchers[r].encoder, [text])[0]
                times[r].append((time.perf_counter() - t0) * 1000)
                if rep == 0:
                    vecs[r].append(v)
    search_ms: dict[str, list[float]] = {r: [] for r in runtimes}
    tops: dict[str, list[list[str]]] = {r: [] for r in runtimes}
    for text in texts:
        for r in runtimes:
            t0 = time.perf_counter()
            tops[r].append([h.id for h in searchers[r].search(text, args.k)])
            search_ms[r].append((time.perf_counter() - t0) * 1000)

    base = tops["torch"]
    out = []
    for r in runtimes:
        cos = np.sum(np.stack(vecs[r]) * np.stack(vecs["torch"]), axis=1)
        overlap = np.array([len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(tops[r], base)])
        out.append({
            "runtime": r, "load_s": load_s[r],
            "encode_p50_ms": round(float(np.percentile(times[r], 50)), 2), "encode_p99_ms": round(float(np.percentile(times[r], 99)), 2),
            "search_p50_ms": round(float(np.percentile(search_ms[r], 50)), 2), "search_p99_ms": round(float(np.percentile(search_ms[r], 99)), 2),
            "cosine_to_torch_mean": round(float(cos.mean()), 5), "cosine_to_torch_min": round(float(cos.min()), 5),
            "top10_overlap_mean": round(float(overlap.mean()), 4), "top10_overlap_min": round(float(overlap.min()), 4),
            "identical_rankings": round(float(np.mean([a == b for a, b in zip(tops[r], base)])), 4),
            "identical_sets": round(float(np.mean([set(a) == set(b) for a, b in zip(tops[r], base)])), 4),
        })
    print(json.dumps({"config": args.config, "queries": len(texts), "query_files": args.queries, "k": args.k,
                      "repeats": args.repeats, "threads": 1, "cpus": os.cpu_count(),
                      "load_average": [round(x, 2) for x in os.getloadavg()], "results": out}, indent=2))


if __name__ == "__main__":
    main()
