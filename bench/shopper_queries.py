"""Precision@10 and nDCG@10 of short shopper queries over a whole catalog, for every ranker.

An item is relevant to a query when every rule of the query's line holds, in the catalog's own
values and independent of whyrec's vocabulary: `"product_type": ["Blazer"]` (the fact equals one of
the values, case-insensitive), `"category": [...]` (the leaf of the category path is one of them),
`"colour~": ["white"]` (the fact contains one of the words). Query files are written by hand,
before tuning; each file is reported on its own (dev and held-out sets).

    python bench/shopper_queries.py --config configs/hm.yaml
        (default query files: bench/shopper_queries.jsonl (dev) and bench/shopper_queries_heldout.jsonl)
    python bench/shopper_queries.py --config my-ikea.yaml --queries bench/shopper_queries_ikea.jsonl

The searcher is the configured one (`Searcher.from_config`: the index with its vocabulary, BM25
index and fitted fusion). Prints one JSON object: per query set, p@10 / nDCG@10 / ms per query for
the rankers dense, facts, bm25, rrf, fitted, plus plain TF-IDF over the same item text; and the
per-query p@10 of fitted and bm25.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def relevant(p, rule: dict[str, list[str]]) -> bool:
    facts = {k.lower(): v.lower() for k, v in p.facts().items()}
    for key, values in rule.items():
        want = [v.lower() for v in values]
        if key.endswith("~"):
            have = facts.get(key[:-1].lower(), "")
            if not any(re.search(rf"\b{re.escape(w)}", have) for w in want):
                return False
        elif key == "category":
            if not p.category or p.category[-1].lower() not in want:
                return False
        elif facts.get(key.lower(), "") not in want:
            return False
    return True


def ndcg(flags: list[bool], n_rel: int, k: int) -> float:
    if n_rel == 0:
        return 0.0
    dcg = sum(1 / np.log2(i + 2) for i, f in enumerate(flags[:k]) if f)
    return float(dcg / sum(1 / np.log2(i + 2) for i in range(min(k, n_rel))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/hm.yaml")
    ap.add_argument("--queries", action="append", help="query file (repeatable); default: the H&M dev and held-out sets")
    ap.add_argument("--rankers", default="dense,facts,bm25,rrf,fitted")
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import torch
    from sklearn.feature_extraction.text import TfidfVectorizer

    from retrieval.catalog import product_text
    from retrieval.search import Searcher

    torch.set_num_threads(1)
    files = args.queries or [str(HERE / "shopper_queries.jsonl"), str(HERE / "shopper_queries_heldout.jsonl")]
    t0 = time.time()
    searcher = Searcher.from_config(args.config)
    load_s = time.time() - t0
    rankers = [r for r in args.rankers.split(",") if r and (r != "fitted" or searcher.fusion is not None)]
    products = searcher.products
    tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
    docs = tfidf.fit_transform([product_text(p) for p in products])

    out: dict = {"config": args.config, "catalog_items": len(products), "searcher_load_seconds": round(load_s, 1),
                 "fusion": searcher.fusion.__dict__ if searcher.fusion else None, "load_average": os.getloadavg()[0], "sets": {}}
    for file in files:
        queries = [json.loads(line) for line in Path(file).read_text().splitlines() if line.strip()]
        rel = {q["query"]: {p.id for p in products if relevant(p, q["relevant"])} for q in queries}
        res: dict = {}

        def score(name, ranked_by_query, ms=None):
            p10 = {q: sum(i in rel[q] for i in ids[: args.k]) / args.k for q, ids in ranked_by_query.items()}
            nd = {q: ndcg([i in rel[q] for i in ids], len(rel[q]), args.k) for q, ids in ranked_by_query.items()}
            res[name] = {"p@10": round(float(np.mean(list(p10.values()))), 3), "ndcg@10": round(float(np.mean(list(nd.values()))), 3),
                         "per_query": p10}
            if ms is not None:
                res[name]["ms_per_query"] = round(ms, 1)

        for ranker in rankers:
            t = time.perf_counter()
            ranked = {q["query"]: [h.id for h in searcher.search(q["query"], args.k, ranker=ranker)] for q in queries}
            score(ranker, ranked, 1000 * (time.perf_counter() - t) / len(queries))
        ranked = {}
        for q in queries:
            s = (docs @ tfidf.transform([q["query"]]).T).toarray().ravel()
            ranked[q["query"]] = [products[i].id for i in np.argsort(-s, kind="stable")[: args.k]]
        score("tf-idf", ranked)
        out["sets"][Path(file).name] = {
            "queries": len(queries),
            "ceiling_p@10": round(float(np.mean([min(1.0, len(r) / args.k) for r in rel.values()])), 3),
            "p@10": {name: r["p@10"] for name, r in res.items()},
            "ndcg@10": {name: r["ndcg@10"] for name, r in res.items()},
            "ms_per_query": {name: r["ms_per_query"] for name, r in res.items() if "ms_per_query" in r},
            "relevant_items_per_query": {q: len(r) for q, r in rel.items()},
            "per_query_p@10": {name: res[name]["per_query"] for name in ("fitted" if "fitted" in res else "rrf", "bm25") if name in res},
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
