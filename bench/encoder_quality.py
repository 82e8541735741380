"""Encoder quality on a catalog: held-out items searched against the WHOLE catalog. Prints JSON.

    python bench/encoder_quality.py --catalog var/hm/catalog --heads data/demo/heads --train anchored,residual
    python bench/encoder_quality.py --catalog var/ikea/catalog --heads data/demo/heads --heads var/hm/heads --train ""

Whole product groups (all colour variants) are held out with the split heads are trained on
(`encoder_train.holdout`, `seed`). For every variant it reports, over the held-out items:
- `text->image same item`: the query is the item's title + description, the target its own photo,
  among the photos of every catalog item (R@1/5/10, MRR);
- `text->image same group`: any photo of the same product group counts;
- `product_text->image same item`: the query is the item's whole encoder text (title, type, colour,
  ..., description), which tells colour variants apart;
- `type->image P@10`: the query is a product type as written in the catalog ("Wall shelf",
  "Trousers"); a hit is a photo of that type; `held_out_share@10` is the share of held-out items in
  those top 10, beside their share of the catalog (lower = new items pushed down).
Variants: `zero-shot` (no training), `heads DIR` (--heads: trained heads folders, e.g. the shipped
H&M heads, applied as they are; use the same split: a folder's held_out_ids.txt), and heads trained here on this catalog's training split (--train
kinds; `--extra-catalog` mixes another catalog's training pairs in). Tower features come from the
cache (var/cache/features), so a variant trains in seconds to minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict

import numpy as np
import torch


def rank_metrics(sims: np.ndarray, targets: list[set[int]]) -> dict[str, float]:
    """R@1/5/10 and MRR, where a query's best-ranked target counts."""
    ranks = np.array([int((row > max(row[list(t)])).sum()) + 1 for row, t in zip(sims, targets)])
    out = {f"R@{k}": float((ranks <= k).mean()) for k in (1, 5, 10)}
    out["MRR"] = float((1.0 / ranks).mean())
    return {k: round(v, 3) for k, v in out.items()}


def product_type(p) -> str:
    return p.attributes.get("product_type") or (p.category[-1] if p.category else "")


def evaluate(zq: np.ndarray, zi: np.ndarray, ztype: np.ndarray, data: dict, zp: np.ndarray) -> dict:
    """Scores of one space: zq / zp (title+description / product_text queries of held-out items),
    zi (photos of the pool), ztype (type queries)."""
    t2i = zq @ zi.T
    top = np.argsort(-(ztype @ zi.T), axis=1)[:, :10]
    p10 = [float(np.mean(data["pool_type"][row] == t)) for row, t in zip(top, data["types"])]
    share = float(np.mean(data["pool_held"][top]))
    return {"text->image same item": rank_metrics(t2i, data["same_item"]),
            "text->image same group": rank_metrics(t2i, data["same_group"]),
            "product_text->image same item": rank_metrics(zp @ zi.T, data["same_item"]),
            "type->image P@10": round(float(np.mean(p10)), 3),
            "held_out_share@10 (type queries)": round(share, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/hm.yaml", help="encoder_train section = the split and the base head settings")
    ap.add_argument("--catalog", help="catalog folder (default: the config's)")
    ap.add_argument("--heads", action="append", default=[], help="an already trained heads folder to score as it is (repeatable)")
    ap.add_argument("--train", default="anchored", help="comma-separated head kinds to train on the split ('' = none)")
    ap.add_argument("--extra-catalog", action="append", default=[], help="mix this catalog's training pairs in (repeatable)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an encoder_train key (e.g. anchor=1.0)")
    ap.add_argument("--residual-scale", action="append", type=float, default=[],
                    help="also score anchored --heads with their residual scaled by this (repeatable)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from retrieval.catalog import Catalog
    from retrieval.config import load_yaml, section
    from retrieval.encoders import EncoderConfig
    from retrieval.encoders.lit import HeadTrainConfig, Towers, load_heads, split_groups, train_heads, training_pairs
    from retrieval.encoders.zeroshot import ZeroShotMap
    from retrieval.search import CatalogConfig

    cfg = load_yaml(args.config)
    catalog_dir = args.catalog or section(cfg, "catalog", CatalogConfig).dir
    catalog = Catalog.load(catalog_dir)
    enc = section(cfg, "encoder", EncoderConfig, cache_dir=args.cache_dir)
    overrides = {k: json.loads(v) if v[:1] in "0123456789-[{tf" else v for k, v in (s.split("=", 1) for s in args.set)}
    base = section(cfg, "encoder_train", HeadTrainConfig, **overrides)
    towers = Towers(enc.cache_dir, threads=args.threads)
    t0 = time.time()
    image, text, has = towers.catalog_features(catalog)
    groups = np.array([p.group_id or p.id for p in catalog.products])
    held = split_groups(list(groups), base.holdout, base.seed)
    q_text = towers.text_features([f"{p.title}. {p.description}".strip() for p in catalog.products])
    types = np.array([product_type(p) for p in catalog.products])
    counts = {t: int(((types == t) & has).sum()) for t in set(types) if t}
    type_queries = sorted(t for t, c in counts.items() if c >= 5)
    z_type = towers.text_features(type_queries)
    feature_s = time.time() - t0

    test = np.flatnonzero(held & has)
    pool = np.flatnonzero(has)
    pos = {int(r): i for i, r in enumerate(pool)}
    by_group: dict[str, set[int]] = {}
    for r in pool:
        by_group.setdefault(groups[r], set()).add(pos[int(r)])
    data = {"same_item": [{pos[int(r)]} for r in test], "same_group": [by_group[groups[r]] for r in test],
            "pool_type": types[pool], "pool_held": held[pool], "types": type_queries}

    out: dict = {"catalog": catalog_dir, "catalog_items": len(catalog), "held_out_queries": int(len(test)),
                 "search_space": int(len(pool)), "held_out_share_of_catalog": round(float(held[pool].mean()), 3),
                 "type_queries": len(type_queries), "tower_feature_seconds": round(feature_s, 1),
                 "split": {"holdout": base.holdout, "seed": base.seed}, "threads": args.threads,
                 "load_average": [round(x, 2) for x in os.getloadavg()]}

    zeroshot = ZeroShotMap.build(towers.text_features)
    with torch.no_grad():
        zi = zeroshot(torch.from_numpy(image[pool])).numpy()
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    out["zero-shot"] = {"settings": asdict(zeroshot.settings), **evaluate(norm(q_text[test]), zi, norm(z_type), data, norm(text[test]))}

    def score(heads) -> dict:
        with torch.no_grad():
            zi = heads.image(torch.from_numpy(image[pool])).numpy()
            zq = heads.text(torch.from_numpy(q_text[test])).numpy()
            zt = heads.text(torch.from_numpy(z_type)).numpy()
            zp = heads.text(torch.from_numpy(text[test])).numpy()
        return evaluate(zq, zi, zt, data, zp)

    for folder in args.heads:
        heads, meta = load_heads(folder)
        out[f"heads {folder}"] = {"kind": meta["config"]["kind"], "trained_on_items": meta.get("stats", {}).get("train_items"),
                                  "extra_catalogs": meta["config"].get("extra_catalogs", []),
                                  "residual_scale": meta["config"].get("residual_scale", 1.0), **score(heads)}
        for scale in args.residual_scale if meta["config"]["kind"] in ("anchored", "adapter") else []:
            heads.set_residual_scale(scale)
            out[f"heads {folder} residual_scale={scale}"] = score(heads)
    for kind in [k for k in args.train.split(",") if k]:
        hcfg = HeadTrainConfig(**{**asdict(base), "kind": kind, "extra_catalogs": args.extra_catalog or base.extra_catalogs})
        catalogs = [catalog] + [Catalog.load(d) for d in hcfg.extra_catalogs]
        xi, xt, _ = training_pairs(catalogs, towers, hcfg.holdout, hcfg.seed)
        heads, stats = train_heads(xi, xt, hcfg, threads=args.threads, zeroshot=zeroshot if kind == "anchored" else None)
        name = f"new {kind} heads" + (" (mixed catalogs)" if hcfg.extra_catalogs else "")
        out[name] = {"train_pairs": int(len(xi)), "train_seconds": stats["seconds"],
                     "config": {k: v for k, v in asdict(hcfg).items() if k not in ("holdout", "seed")}, **score(heads)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
