"""What models may need beyond purchases, taken from the catalog once: item texts, groups (colour
variants), prices, categories, colours, and (optionally) item vectors from any encoder."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from retrieval.catalog import Catalog, product_text

log = logging.getLogger(__name__)


@dataclass
class ModelContext:
    texts: list[str]
    item_vectors: np.ndarray | None = None  # content model + "looks/reads like the history" features
    image_vectors: np.ndarray | None = None  # optional photo-only vectors (ranker features)
    groups: np.ndarray | None = None  # int code per item; colour variants share it
    prices: np.ndarray | None = None  # float, NaN unknown
    category: np.ndarray | None = None  # int code of the narrowest category level
    category_top: np.ndarray | None = None  # int code of the broadest level
    colour: np.ndarray | None = None  # int code of the colour
    text_tfidf_matrix: Any = None  # the items' TF-IDF rows (`text_tfidf`), made on first use or restored with a saved fit

    def text_tfidf(self):
        """(items x terms) TF-IDF of the item texts (min_df 1, sublinear tf, English stop words), made
        once and shared: the ranker's text-similarity features and goes-with's text component."""
        if self.text_tfidf_matrix is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            self.text_tfidf_matrix = TfidfVectorizer(min_df=1, sublinear_tf=True, stop_words="english").fit_transform(self.texts).tocsr()
        return self.text_tfidf_matrix

    @classmethod
    def from_catalog(cls, catalog: Catalog, item_vectors: np.ndarray | None = None,
                     image_vectors: np.ndarray | None = None) -> "ModelContext":
        ps = catalog.products
        for name, v in (("item", item_vectors), ("image", image_vectors)):
            if v is not None and len(v) != len(ps):
                raise ValueError(f"{len(v)} {name} vectors for {len(ps)} catalog items")

        def codes(values: list[str]) -> np.ndarray:
            table: dict[str, int] = {}
            return np.array([table.setdefault(v, len(table)) for v in values], np.int64)

        # one pass over the products: a stored catalog makes each Product on access (1M items: ~1 min a pass)
        texts, groups, prices, narrow, broad, colours = [], [], [], [], [], []
        for p in tqdm(ps, desc="model context", unit="item", disable=len(ps) < 100_000, mininterval=5):
            texts.append(product_text(p))
            groups.append(p.group_id or f"item:{p.id}")
            prices.append(np.nan if p.price is None else float(p.price))
            narrow.append(p.category[-1].lower() if p.category else "")
            broad.append(p.category[0].lower() if p.category else "")
            colours.append((p.colour or "").lower())
        return cls(
            texts=texts,
            item_vectors=None if item_vectors is None else np.asarray(item_vectors, np.float32),
            image_vectors=None if image_vectors is None else np.asarray(image_vectors, np.float32),
            groups=codes(groups),
            prices=np.array(prices, np.float64),
            category=codes(narrow),
            category_top=codes(broad),
            colour=codes(colours),
        )


def l2_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n > 0, n, 1.0)).astype(np.float32)


def index_vectors(catalog: Catalog, index) -> np.ndarray:
    """An index's item vectors in catalog order (zeros for items the index lacks); the index's own
    matrix, not a copy, when it holds the catalog's items in catalog order (1M items: 1 GB saved,
    and a memory-mapped index shares it between reloads). FAISS's memory-mapped storage is not
    aligned, and numpy multiplies an unaligned matrix ~100x slower than BLAS does: a model that
    multiplies the whole matrix (`Content`) makes its own aligned copy; the rest gather rows."""
    if list(index.ids) == list(catalog.ids) and getattr(index, "vectors", None) is not None:
        v = np.asarray(index.vectors)
        if v.dtype == np.float32 and v.shape == (len(catalog), index.dim) and v.flags.c_contiguous:
            return v
    out = np.zeros((len(catalog), index.dim), np.float32)
    rows = [(i, index.row[pid]) for i, pid in enumerate(catalog.ids) if pid in index.row]
    if rows:
        a, b = map(np.array, zip(*rows))
        out[a] = np.asarray(index.vectors[b], np.float32)
    if len(rows) < len(catalog):
        log.warning("index lacks %d of %d catalog items: their content vectors are zero", len(catalog) - len(rows), len(catalog))
    return out


def tower_vectors(catalog: Catalog, cache_dir: str | Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(text, image) features of the frozen towers, read from the feature cache only (never
    computed here); None for a tower whose cache lacks any catalog item."""
    from retrieval.encoders.towers import FeatureCache, image_key, text_key

    out: list[np.ndarray | None] = []
    for name, dim, keys in (("all-MiniLM-L6-v2", 384, lambda: [text_key(product_text(p)) for p in catalog.products]),
                            ("efficientnet-lite0+colour28", 1280 + 28, lambda: _image_keys(catalog, image_key))):
        cache = FeatureCache(cache_dir, name, dim)
        try:
            k = keys()
        except OSError as err:
            log.warning("tower %s: %s", name, err)
            out.append(None)
            continue
        missing = cache.missing(k) if k else ["none"]
        if missing:
            log.warning("feature cache %s lacks %d of %d items: not used", cache.path, len(missing), len(k))
            out.append(None)
        else:
            out.append(l2_rows(cache.get(k)))
    return out[0], out[1]


def _image_keys(catalog: Catalog, image_key) -> list[str]:
    keys = []
    for p in catalog.products:
        path = catalog.image_file(p)
        if path is None:
            raise OSError(f"item {p.id} has no photo")
        keys.append(image_key(path))
    return keys
