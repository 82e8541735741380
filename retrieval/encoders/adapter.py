"""Residual adapter heads on ANY frozen encoder whose text and image vectors share a space
(`zeroshot`, `openclip`, even `lit`): `normalise(v + mlp(v))` per side, the MLP's last layer
zero-initialised so an untrained adapter is the encoder itself, trained contrastively on the
catalog's image-text pairs with the anchor penalty (retrieval.encoders.lit.HeadTrainConfig.anchor)
keeping the corrections small.

    encoder: {name: openclip, model: ViT-B-32, pretrained: ..., adapter: var/shop/adapter}
    whyrec encoder train --config shop.yaml --adapter      # trains and writes encoder.adapter
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from retrieval.artifacts import atomic_write_text
from retrieval.catalog import Catalog, product_text
from retrieval.encoders.base import Encoder, encode_queries, l2_normalise
from retrieval.encoders.lit import HeadTrainConfig, load_heads, save_heads, split_groups, train_heads

log = logging.getLogger(__name__)


def base_name(encoder: Encoder) -> str:
    return getattr(encoder, "name", type(encoder).__name__)


class AdapterEncoder:
    """A frozen encoder plus its trained residual adapter; same interface, same `dim`."""

    def __init__(self, base: Encoder, adapter_dir: str | Path):
        self.base = base
        self.heads, self.meta = load_heads(adapter_dir, towers=(base_name(base), base_name(base)))
        if self.heads.kind != "adapter":
            raise ValueError(f"{adapter_dir} holds {self.heads.kind} heads, not an adapter")
        if self.heads.dim != base.dim:
            raise ValueError(f"adapter at {adapter_dir} is {self.heads.dim}-d, the encoder {base.dim}-d")
        self.dim = base.dim
        self.name = f"{base_name(base)}+adapter"

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return l2_normalise(self.heads.text(torch.from_numpy(self.base.encode_text(texts))).numpy())

    @torch.inference_mode()
    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return l2_normalise(self.heads.text(torch.from_numpy(encode_queries(self.base, texts))).numpy())

    @torch.inference_mode()
    def encode_image(self, images: Sequence) -> np.ndarray:
        return l2_normalise(self.heads.image(torch.from_numpy(self.base.encode_image(images))).numpy())


def train_adapter(encoder: Encoder, catalogs: Sequence[Catalog], out: str | Path, cfg: HeadTrainConfig | None = None,
                  threads: int = 2, command: str = "") -> dict:
    """Encode every item with a photo outside the held-out groups (text: `product_text`), train the
    adapter on those pairs, write it to `out` (atomically) with the held-out ids beside it."""
    cfg = cfg or HeadTrainConfig(kind="adapter", hidden=512, anchor=1.0)
    if cfg.kind != "adapter":
        raise ValueError(f"train_adapter trains kind adapter, not {cfg.kind!r}")
    images, texts, held_ids = [], [], []
    for catalog in catalogs:
        held = split_groups(catalog.groups(), cfg.holdout, cfg.seed)
        files = [catalog.image_file(p) for p in catalog.products]
        keep = [i for i, f in enumerate(files) if f is not None and not held[i]]
        images.append(encoder.encode_image([str(files[i]) for i in keep]))
        texts.append(encoder.encode_text([product_text(catalog.products[i]) for i in keep]))
        held_ids += [p.id for p, h in zip(catalog.products, held) if h]
    xi, xt = np.concatenate(images), np.concatenate(texts)
    if len(xi) < 2:
        raise ValueError("need at least two items with images outside the held-out split to train an adapter")
    heads, stats = train_heads(xi, xt, cfg, threads)
    name = base_name(encoder)
    meta = {"stats": stats, "catalog_items": sum(len(c) for c in catalogs), "held_out_items": len(held_ids),
            "image_tower": name, "text_tower": name, "command": command}
    save_heads(heads, cfg, out, meta)
    atomic_write_text(Path(out) / "held_out_ids.txt", "\n".join(held_ids))
    log.info("trained a residual adapter on %s over %d pairs in %.1fs", name, len(xi), stats["seconds"])
    return meta
