"""The one encoder interface, and item vectors built from it (image, text, or a weighted fusion)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from retrieval.catalog import Catalog, product_text


@dataclass
class EncoderConfig:
    """`encoder:` section. name: lit | zeroshot | openclip."""

    name: str = "lit"
    heads: str | None = None  # lit: folder of trained projection heads
    adapter: str | None = None  # any encoder: folder of a residual adapter trained on its outputs (retrieval.encoders.adapter)
    category_head: str | None = None  # folder of a linear category head on image vectors (retrieval.category_head)
    cache_dir: str = "var/cache/features"  # tower features, keyed by model and content
    batch_size: int = 32
    threads: int = 2
    # the query side of the MiniLM text tower (lit, zeroshot): torch | onnx | int8 (ONNX Runtime; int8 =
    # dynamic per-channel quantisation). Item texts are always encoded with torch. bench/query_encoder.py:
    # onnx gives torch's rankings ~2.7x faster per query on one thread; int8 ~5x faster, 93% of torch's top-10,
    # the same fitted-ranker p@10 / nDCG on the H&M eval queries (configs/hm.yaml takes it).
    query_runtime: str = "torch"
    onnx_dir: str = "var/cache/onnx"  # the exported ONNX models (made once from the packaged weights, no download)
    # openclip
    model: str = "ViT-B-32"
    pretrained: str | None = None  # a tag (e.g. laion2b_s34b_b79k) or a local checkpoint file
    model_config: dict = field(default_factory=dict)  # extra open_clip model config (tests: tiny)

    def __post_init__(self):
        if self.query_runtime not in ("torch", "onnx", "int8"):
            raise ValueError(f"encoder.query_runtime must be torch, onnx or int8, not {self.query_runtime!r}")


@dataclass
class ItemVectorConfig:
    """How an item's vector is made: `image`, `text` or `fusion` (weighted sum, then renormalised)."""

    mode: str = "fusion"
    image_weight: float = 0.5

    def __post_init__(self):
        if self.mode not in ("image", "text", "fusion"):
            raise ValueError(f"item vector mode must be image, text or fusion, not {self.mode!r}")
        if not 0.0 <= self.image_weight <= 1.0:
            raise ValueError("image_weight must lie in [0, 1]")


class Encoder(Protocol):
    """Maps texts and images into one L2-normalised float32 space of size `dim`."""

    name: str
    dim: int

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_image(self, images: Sequence) -> np.ndarray: ...


def encode_queries(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """Query vectors: the encoder's query-side path (`encode_queries`, which honours
    `encoder.query_runtime`) where it has one, else `encode_text`."""
    query_side = getattr(encoder, "encode_queries", None)
    return query_side(texts) if query_side is not None else encoder.encode_text(texts)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def item_vectors(encoder: Encoder, catalog: Catalog, cfg: ItemVectorConfig | None = None, rows: Sequence[int] | None = None) -> np.ndarray:
    """One vector per catalog item, in catalog order (or for the given rows only, e.g. one shard of
    `whyrec index embed`). Items without an image use their text vector, so text-only items still rank."""
    cfg = cfg or ItemVectorConfig()
    products = catalog.products if rows is None else [catalog.products[int(r)] for r in rows]
    n = len(products)
    text = encoder.encode_text([product_text(p) for p in products]) if cfg.mode != "image" else None
    if cfg.mode == "text":
        return text
    files = [catalog.image_file(p) for p in products]
    has = [i for i, f in enumerate(files) if f is not None]
    image = np.zeros((n, encoder.dim), np.float32)
    if has:
        image[has] = encoder.encode_image([files[i] for i in has])
    if cfg.mode == "image":
        if text is None and len(has) < n:
            text = encoder.encode_text([product_text(p) for p in products])
        out = text.copy() if text is not None else image
        out[has] = image[has]
        return l2_normalise(out)
    w = np.full(n, cfg.image_weight, np.float32)
    w[[i for i in range(n) if files[i] is None]] = 0.0
    return l2_normalise(w[:, None] * image + (1 - w)[:, None] * text)


