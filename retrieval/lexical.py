"""The lexical retriever: BM25 (bm25s, Snowball stemming) over each item's text.

An item's document is `product_text` (title, salient attributes, description) plus the levels of
its category path the text does not already say, so "bookcase" finds a product whose only mention
of it is its category. Built at `whyrec index build` time and saved beside the vector index
(`<index dir>/lexical/`, published as a whole folder by `retrieval.artifacts.atomic_dir`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.artifacts import atomic_dir, atomic_write_json
from retrieval.catalog import Product, product_text

log = logging.getLogger(__name__)

NAME = "lexical"
IDS_FILE = "ids.json"


def lexical_text(p: Product) -> str:
    """The text BM25 indexes for an item."""
    text = product_text(p)
    low = text.lower()
    extra = [level for level in p.category if level and level.lower() not in low]
    return text + (" " + ". ".join(extra) + "." if extra else "")


def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


class LexicalIndex:
    """BM25 scores of every item for a bag of query words."""

    def __init__(self, retriever, ids: Sequence[str], build_seconds: float = 0.0):
        self.retriever = retriever
        self.ids = list(ids)
        self.build_seconds = build_seconds
        self._stem = _stemmer()

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, products: Sequence[Product], k1: float = 1.2, b: float = 0.75) -> "LexicalIndex":
        import bm25s

        if not products:
            raise ValueError("cannot build a lexical index over no items")
        t0 = time.time()
        corpus = bm25s.tokenize([lexical_text(p) for p in products], stopwords="english", stemmer=_stemmer(), show_progress=False)
        retriever = None  # a catalog with no words at all (photos only): BM25 scores nothing
        if corpus.vocab:
            retriever = bm25s.BM25(k1=k1, b=b)
            retriever.index(corpus, show_progress=False)
        out = cls(retriever, [p.id for p in products], round(time.time() - t0, 2))
        log.info("BM25 over %d items in %.1fs", len(products), out.build_seconds)
        return out

    def query_tokens(self, words: Sequence[str]) -> list[str]:
        import bm25s

        text = " ".join(words)
        if not text.strip():
            return []
        toks = bm25s.tokenize([text], stopwords="english", stemmer=self._stem, return_ids=False, show_progress=False)
        return list(toks[0]) if toks else []

    def scores(self, words: Sequence[str]) -> np.ndarray:
        """BM25 score of every item (index order) for these words; zeros when none is known."""
        toks = [t for t in self.query_tokens(words) if self.retriever is not None and t in self.retriever.vocab_dict]
        if not toks:
            return np.zeros(len(self.ids), np.float32)
        return np.asarray(self.retriever.get_scores(toks), dtype=np.float32)

    # ------------------------------------------------------------------ storage
    def save(self, index_dir: str | Path) -> Path:
        """Publish the BM25 index as `index_dir/lexical/` (written aside, then renamed into place)."""
        path = Path(index_dir) / NAME
        with atomic_dir(path) as staged:
            if self.retriever is not None:
                self.retriever.save(str(staged), show_progress=False)
            atomic_write_json(staged / IDS_FILE, {"ids": self.ids, "build_seconds": self.build_seconds, "empty": self.retriever is None})
        return path

    @classmethod
    def load(cls, index_dir: str | Path) -> "LexicalIndex":
        import json

        import bm25s

        path = Path(index_dir) / NAME
        if not (path / IDS_FILE).exists():
            raise FileNotFoundError(f"no lexical index under {index_dir}; run `whyrec index build`")
        meta = json.loads((path / IDS_FILE).read_text())
        retriever = None if meta.get("empty") else bm25s.BM25.load(str(path), mmap=False)
        return cls(retriever, meta["ids"], meta.get("build_seconds", 0.0))
