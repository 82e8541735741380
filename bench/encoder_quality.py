"""Encoder quality on a catalog: text->image and image->image retrieval over the whole catalog,
measured on items whose pairs were held out of head training.

    python bench/encoder_quality.py --config configs/hm.yaml

Trains residual and linear heads on the same split (tower features come from the cache, so this
takes seconds once `whyrec encoder train` or `whyrec index build` has filled it) and compares them
with the untrained towers where that is meaningful (image->image). Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def rank_metrics(sims: np.ndarray, targets: list[set[int]]) -> dict[str, float]:
    """R@1/5/10 and MRR (eval.metrics), where a query's first hit among its target rows counts."""
    from eval.metrics import hit_rate_at_k, reciprocal_rank

    ranks = [[int((row > max(row[list(tgt)])).sum()) + 1] for row, tgt in zip(sims, targets)]
    out = {f"R@{k}": float(np.mean([hit_rate_at_k(r, k) for r in ranks])) for k in (1, 5, 10)}
    out["MRR"] = float(np.mean([reciprocal_rank(r) for r in ranks]))
    return out


def rounded(d: dict) -> dict:
    return {k: round(v, 3) for k, v in d.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/hm.yaml")
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args()

    from retrieval.catalog import Catalog
    from retrieval.config import load_yaml, section
    from retrieval.encoders import EncoderConfig, l2_normalise
    from retrieval.encoders.lit import HeadTrainConfig, Towers, split_groups, train_heads
    from retrieval.search import CatalogConfig

    cfg = load_yaml(args.config)
    catalog = Catalog.load(section(cfg, "catalog", CatalogConfig).dir)
    enc = section(cfg, "encoder", EncoderConfig)
    base = section(cfg, "encoder_train", HeadTrainConfig, epochs=args.epochs)
    towers = Towers(enc.cache_dir, threads=enc.threads)
    t0 = time.time()
    image, text, has = towers.catalog_features(catalog)
    groups = np.array([p.group_id or p.id for p in catalog.products])
    held = split_groups(list(groups), base.holdout, base.seed)
    queries = [f"{p.title}. {p.description}".strip() for p in catalog.products]
    q_text = towers.text_features(queries)  # the query: name + description
    # product_text adds colour and type words: colour variants share a description, so only these tell them apart
    feature_s = time.time() - t0

    test = np.flatnonzero(held & has)
    pool = np.flatnonzero(has)  # the whole catalog (items with a photo) is the search space
    pos = {int(r): i for i, r in enumerate(pool)}
    same_item = [{pos[int(r)]} for r in test]
    by_group: dict[str, set[int]] = {}
    for r in pool:
        by_group.setdefault(groups[r], set()).add(pos[int(r)])
    same_group = [by_group[groups[r]] for r in test]
    # image->image: other colours of the same product (queries whose product has another colour)
    ii = [(r, by_group[groups[r]] - {pos[int(r)]}) for r in test if len(by_group[groups[r]]) > 1]

    out: dict = {"catalog_items": len(catalog), "held_out_queries": int(len(test)), "search_space": int(len(pool)),
                 "image_to_image_queries": len(ii), "tower_feature_seconds": round(feature_s, 1)}
    # untrained towers: only image->image is meaningful (text and image towers live in different spaces)
    raw = l2_normalise((image - image[pool].mean(0)) / (image[pool].std(0) + 1e-4))
    sims = raw[[r for r, _ in ii]] @ raw[pool].T
    for j, (r, _) in enumerate(ii):
        sims[j, pos[int(r)]] = -np.inf
    out["untrained towers"] = {"text->image": "n/a (separate spaces)", "image->image other colour": rounded(rank_metrics(sims, [t for _, t in ii]))}

    for kind in ("residual", "linear"):
        hcfg = HeadTrainConfig(**{**base.__dict__, "kind": kind})
        train = has & ~held
        heads, stats = train_heads(image[train], text[train], hcfg, threads=enc.threads)
        with torch.no_grad():
            zi = heads.image(torch.from_numpy(image[pool])).numpy()
            zq = heads.text(torch.from_numpy(q_text[test])).numpy()
            zt = heads.text(torch.from_numpy(text[pool])).numpy()
            zp = heads.text(torch.from_numpy(text[test])).numpy()
        t2i = zq @ zi.T
        p2i = zp @ zi.T
        i2t = zi[[pos[int(r)] for r in test]] @ zt.T
        i2i = zi[[pos[int(r)] for r, _ in ii]] @ zi.T
        for j, (r, _) in enumerate(ii):
            i2i[j, pos[int(r)]] = -np.inf
        out[f"{kind} heads"] = {
            "train_seconds": stats["seconds"], "train_pairs": int(train.sum()), "temperature": round(stats["temperature"], 4),
            "text->image same item": rounded(rank_metrics(t2i, same_item)),
            "text->image same product_code": rounded(rank_metrics(t2i, same_group)),
            "product_text->image same item": rounded(rank_metrics(p2i, same_item)),
            "image->text same item": rounded(rank_metrics(i2t, same_item)),
            "image->image other colour": rounded(rank_metrics(i2i, [t for _, t in ii])),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
