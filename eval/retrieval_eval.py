"""`whyrec eval retrieval`: cross-modal retrieval quality of an encoder on a catalog.

Queries are the items held out of head training (`<heads>/held_out_ids.txt`, whole product groups)
by default, or every item; the gallery is the held-out items (default) or the whole catalog. Items
the heads were trained on are easy (the heads have seen their image-text pairs): only held-out
queries measure how the encoder does on new items. For each query item:
- text->image: its text against every gallery image; relevant = its own image
  (`text_to_image_group`: any colour of the same product counts, which is what a shopper needs;
  H&M colour variants share a description, so the exact-item task is partly a colour task);
- image->text: its image against every gallery text; relevant = its own text;
- image->image: its image against the other gallery images; relevant = the other colours of the
  same product (group_id); only items with another colour in the gallery are queries.
R@K here is the hit rate (any relevant item in the top K), MRR the reciprocal rank of the first.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from eval import metrics as M
from retrieval.catalog import Catalog, product_text

log = logging.getLogger(__name__)

HELD_OUT_FILE = "held_out_ids.txt"


@dataclass
class RetrievalEvalConfig:
    """`eval_retrieval:` section."""

    heads: str | None = None  # lit heads folder (also names the held-out items)
    encoder: dict = field(default_factory=dict)  # or any `encoder:` config (EncoderConfig fields), e.g. openclip
    gallery: str = "heldout"  # heldout | all
    queries: str = "heldout"  # heldout | all: which gallery items are queries (heldout needs heads that name them)
    max_queries: int | None = None  # a seeded sample of query items per task (quick runs)
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    bootstrap: int = 1000
    seed: int = 0
    cache_dir: str = "var/cache/features"
    threads: int = 2
    chunk: int = 1024

    def __post_init__(self):
        if self.gallery not in ("heldout", "all") or self.queries not in ("heldout", "all"):
            raise ValueError("eval_retrieval.gallery and .queries must be heldout or all")


def held_out_ids(heads_dir: str | Path) -> list[str]:
    path = Path(heads_dir) / HELD_OUT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: these heads name no held-out items (use --gallery all)")
    return path.read_text().split()


def _task(Q: np.ndarray, G: np.ndarray, relevant: list[list[int]], keys: np.ndarray, ks: Sequence[int], self_index: list[int] | None,
          chunk: int, desc: str) -> np.ndarray:
    """Per-query [hit@k..., rr] for queries Q against gallery G."""
    rows = []
    for s in tqdm(range(0, len(Q), chunk), desc=desc, unit="chunk", mininterval=5, disable=len(Q) <= chunk):
        S = Q[s : s + chunk] @ G.T
        for r in range(len(S)):
            q = s + r
            excluded = None
            if self_index is not None:
                excluded = np.zeros(G.shape[0], bool)
                excluded[self_index[q]] = True
            ranks, _ = M.ranks_of(S[r], relevant[q], keys, excluded)
            rows.append([M.hit_rate_at_k(ranks, k) for k in ks] + [M.reciprocal_rank(ranks)])
    return np.asarray(rows, np.float64)


def evaluate_retrieval(catalog: Catalog, encoder, item_ids: Sequence[str] | None = None, cfg: RetrievalEvalConfig | None = None,
                       query_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """R@K and MRR (bootstrap intervals) for text->image, image->text and image->image.
    `item_ids`: the gallery (None: the whole catalog); `query_ids`: which of them are queries (None: all).
    Held-out queries against the whole catalog are the realistic case: new items among trained ones."""
    cfg = cfg or RetrievalEvalConfig()
    t0 = time.time()
    ids = list(item_ids) if item_ids is not None else list(catalog.ids)
    unknown = [x for x in ids if x not in catalog]
    if unknown:
        raise ValueError(f"{len(unknown)} evaluation items are not in the catalog (e.g. {unknown[0]})")
    items = [catalog[x] for x in ids if catalog.image_file(catalog[x]) is not None]
    if len(items) < 2:
        raise ValueError("retrieval evaluation needs at least two items with images")
    t = time.time()
    T = np.asarray(encoder.encode_text([product_text(p) for p in items]), np.float32)
    I = np.asarray(encoder.encode_image([str(catalog.image_file(p)) for p in items]), np.float32)
    encode_s = time.time() - t
    n = len(items)
    keys = M.tie_keys(n, cfg.seed)
    groups = [p.group_id or p.id for p in items]
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    rng = np.random.default_rng(cfg.seed)

    def sample(qs: list[int]) -> list[int]:
        if cfg.max_queries is None or cfg.max_queries >= len(qs):
            return qs
        return sorted(rng.choice(qs, cfg.max_queries, replace=False).tolist())

    names = [f"r@{k}" for k in cfg.ks] + ["mrr"]
    tasks: dict[str, Any] = {}
    is_query = np.ones(n, bool) if query_ids is None else np.isin([p.id for p in items], list(query_ids))
    if not is_query.any():
        raise ValueError("none of the query items is in the gallery with an image")
    q = sample(np.flatnonzero(is_query).tolist())
    specs = {
        "text_to_image": (T[q], I, [[i] for i in q], None),
        "text_to_image_group": (T[q], I, [members[groups[i]] for i in q], None),
        "image_to_text": (I[q], T, [[i] for i in q], None),
    }
    qi = sample([i for i in range(n) if is_query[i] and len(members[groups[i]]) > 1])
    if qi:
        specs["image_to_image"] = (I[qi], I, [[j for j in members[groups[i]] if j != i] for i in qi], qi)
    for name, (Q, G, rel, self_idx) in specs.items():
        vals = _task(Q, G, rel, keys, cfg.ks, self_idx, cfg.chunk, name)
        ests = M.bootstrap_columns(vals, cfg.bootstrap, seed=cfg.seed)
        tasks[name] = {"queries": len(Q), **{m: e.to_dict() for m, e in zip(names, ests)}}
    return {"gallery_items": n, "query_items": int(is_query.sum()), "items_without_image": len(ids) - n, "tasks": tasks, "encode_s": round(encode_s, 1),
            "wall_s": round(time.time() - t0, 1)}


def retrieval_markdown(result: dict) -> str:
    tasks = result["tasks"]
    cols = [c for c in next(iter(tasks.values())) if c != "queries"]
    lines = [f"gallery: {result['gallery_items']} items, {result.get('query_items', result['gallery_items'])} of them queries", "", "| task | queries | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for name, t in tasks.items():
        lines.append(f"| {name} | {t['queries']} | " + " | ".join(f"{t[c]['mean']:.3f} [{t[c]['low']:.3f}, {t[c]['high']:.3f}]" for c in cols) + " |")
    return "\n".join(lines) + "\n"
