"""Precision@10 of short shopper queries over the whole catalog, for several rankers.

Relevance comes from the query file's rules in the catalog's own attribute values (eval/queries/hm.yaml,
judged by eval.search_eval), independent of whyrec's vocabulary. This bench compares item-vector
modes and late-fusion weights; `whyrec eval search` scores the search rankers.

    python bench/shopper_queries.py --config configs/hm.yaml [--queries eval/queries/hm.yaml] [--split dev]

Prints one JSON object: precision@10 per ranker (mean over queries) and per query.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/hm.yaml")
    ap.add_argument("--queries", default=str(Path(__file__).resolve().parents[1] / "eval" / "queries" / "hm.yaml"))
    ap.add_argument("--split", choices=["dev", "heldout", "all"], default="all")
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()

    from sklearn.feature_extraction.text import TfidfVectorizer

    from eval.search_eval import load_queries, relevant_ids
    from retrieval.catalog import Catalog, product_text
    from retrieval.config import load_yaml, section
    from retrieval.encoders import EncoderConfig, ItemVectorConfig, create_encoder, item_vectors
    from retrieval.index import VectorIndex
    from retrieval.search import CatalogConfig, SearchConfig, Searcher

    cfg = load_yaml(args.config)
    catalog = Catalog.load(section(cfg, "catalog", CatalogConfig).dir)
    encoder = create_encoder(section(cfg, "encoder", EncoderConfig))
    queries = [{"query": q.text, "relevant": q.relevant} for q in load_queries(args.queries, args.split)]
    rel = {q["query"]: relevant_ids(catalog, q["relevant"]) for q in queries}
    ceiling = {q: min(1.0, len(r) / args.k) for q, r in rel.items()}

    def precision(ranked: list[str], q: str) -> float:
        return sum(i in rel[q] for i in ranked[: args.k]) / args.k

    results: dict[str, dict] = {}
    vecs = {mode: item_vectors(encoder, catalog, ItemVectorConfig(mode, 0.5)) for mode in ("image", "text", "fusion")}
    for mode, v in vecs.items():
        index = VectorIndex.build(v, catalog.ids)
        for w in (0.0, 1.0):
            searcher = Searcher(catalog, encoder, index, SearchConfig(attribute_weight=w))
            t0 = time.perf_counter()
            per = {q["query"]: precision([h.id for h in searcher.search(q["query"], args.k)], q["query"]) for q in queries}
            name = f"{mode} vectors" + (" + query facts (late fusion)" if w else " (dense only)")
            results[name] = {"p@10": round(float(np.mean(list(per.values()))), 3), "ms_per_query": round(1000 * (time.perf_counter() - t0) / len(queries), 1),
                             "per_query": per}

    tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
    docs = tfidf.fit_transform([product_text(p) for p in catalog.products])
    per = {}
    for q in queries:
        scores = (docs @ tfidf.transform([q["query"]]).T).toarray().ravel()
        per[q["query"]] = precision([catalog.ids[i] for i in np.argsort(-scores)[: args.k]], q["query"])
    results["tf-idf on item text"] = {"p@10": round(float(np.mean(list(per.values()))), 3), "per_query": per}

    summary = {"queries": len(queries), "catalog_items": len(catalog), "ceiling_p@10": round(float(np.mean(list(ceiling.values()))), 3),
               "p@10": {name: r["p@10"] for name, r in results.items()},
               "ms_per_query": {name: r.get("ms_per_query") for name, r in results.items() if "ms_per_query" in r},
               "relevant_items_per_query": {q: len(r) for q, r in rel.items()},
               "per_query": {name: r["per_query"] for name, r in results.items()}}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
