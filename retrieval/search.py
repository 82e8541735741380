"""Search and recommendation over an index: dense retrieval fused late with query understanding.

A query is read twice: the encoder turns it into a vector, and the vocabulary picks out the
attribute values it names (colour, type, pattern, department, material, fit, with synonyms and
negation). Candidates are the dense top-N plus the items that match every named value; each is
scored `dense + attribute_weight * fact`, where `fact` is the kind-weighted share of named values
the item backs (1 for a structured attribute, `text_fact_credit` for a word only its description
uses; a violated negation counts -1). Dense similarity alone misses colour and pattern words
(navy, lace, polka dot); facts alone cannot rank within a match.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from retrieval.catalog import Catalog, Product
from retrieval.config import load_yaml, section
from retrieval.encoders import EncoderConfig, ItemVectorConfig, create_encoder, item_vectors, l2_normalise
from retrieval.index import IndexParams, VectorIndex
from retrieval.query import Query, read_query
from retrieval.vocabulary import Term, accepts, canonical, item_values

log = logging.getLogger(__name__)


@dataclass
class CatalogConfig:
    """`catalog:` section: where the imported catalog lives (and, for `whyrec data import`, its source)."""

    dir: str = "var/catalog"
    source: str | None = None
    format: str = "hm"


@dataclass
class IndexConfig:
    """`index:` section."""

    dir: str = "var/index"
    item_vectors: ItemVectorConfig = field(default_factory=ItemVectorConfig)
    params: IndexParams = field(default_factory=IndexParams)


@dataclass
class SearchConfig:
    """`search:` section: late fusion and personalisation weights."""

    attribute_weight: float = 1.0  # 0 = dense only
    candidates: int = 200  # dense candidates re-scored per query
    max_fact_candidates: int = 50_000  # items matching every named value, added to the candidates
    history_half_life: float = 5.0  # purchases: weight halves every this many newer purchases
    query_weight: float = 0.5  # recommend with a query: share of the query vector
    text_fact_credit: float = 0.5  # a value read only from the description counts this much
    family_credit: float = 0.8  # "green" asked, a khaki item: a family member counts less than the value itself
    # fit and material are preferences; type, colour, pattern and department decide what is asked for
    kind_weights: dict = field(default_factory=lambda: {"material": 0.5, "fit": 0.3})


@dataclass
class Filters:
    """Metadata filters; every set field must hold."""

    category: str | None = None  # matches any level of the category path, case-insensitive
    colour: str | None = None  # a colour word (family words like "blue" include dark/light blue)
    price_min: float | None = None
    price_max: float | None = None

    def is_empty(self) -> bool:
        return all(v is None for v in (self.category, self.colour, self.price_min, self.price_max))


@dataclass
class Hit:
    id: str
    score: float
    dense: float
    matched: list[str] = field(default_factory=list)  # query phrases this item's facts back
    because: str | None = None  # recommend: the history item it is most like


def parse_filters(specs: Sequence[str] | dict | Filters | None) -> Filters:
    """Filters from a dict, a Filters, or CLI strings like `category=Dress`, `colour=navy`, `price=0.01..0.05`."""
    if specs is None:
        return Filters()
    if isinstance(specs, Filters):
        return specs
    if isinstance(specs, dict):
        return Filters(**specs)
    out: dict[str, Any] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        key = key.strip().lower().replace("color", "colour")
        if not sep or not value.strip():
            raise ValueError(f"filter {spec!r}: expected key=value (category, colour, price=MIN..MAX)")
        if key == "price":
            lo, _, hi = value.partition("..")
            try:
                out["price_min"] = float(lo) if lo.strip() else None
                out["price_max"] = float(hi) if hi.strip() else None
            except ValueError:
                raise ValueError(f"filter {spec!r}: price must look like 0.01..0.05, 0.01.. or ..0.05") from None
        elif key in ("category", "colour"):
            out[key] = value.strip()
        else:
            raise ValueError(f"unknown filter {key!r}; use category, colour or price")
    return Filters(**out)


class Searcher:
    """Text, image, similar-item and history-based retrieval over one catalog and its index."""

    def __init__(self, catalog: Catalog, encoder, index: VectorIndex, cfg: SearchConfig | None = None):
        missing = [i for i in index.ids if i not in catalog]
        if missing:
            raise ValueError(f"index holds {len(missing)} ids the catalog lacks (e.g. {missing[:3]}); rebuild the index")
        if encoder.dim != index.dim:
            raise ValueError(f"encoder dimension {encoder.dim} != index dimension {index.dim}; rebuild the index with this encoder")
        self.catalog = catalog
        self.encoder = encoder
        self.index = index
        self.cfg = cfg or SearchConfig()
        self.products: list[Product] = [catalog.by_id[i] for i in index.ids]
        self._histories: dict[str, list[str]] | None = None
        self._build_fact_tables()

    def _build_fact_tables(self) -> None:
        strong: dict[tuple[str, str], list[int]] = {}
        weak: dict[tuple[str, str], list[int]] = {}
        for row, p in enumerate(self.products):
            structured = item_values(p, text=False)
            for kind, values in item_values(p).items():
                for v in values:
                    (strong if v in structured[kind] else weak).setdefault((kind, v), []).append(row)
        self.strong_postings = {key: np.array(rows, dtype=np.int64) for key, rows in strong.items()}
        self.weak_postings = {key: np.array(rows, dtype=np.int64) for key, rows in weak.items()}
        self.prices = np.array([np.nan if p.price is None else p.price for p in self.products], dtype=np.float64)
        self.category_paths = [" > ".join(p.category).lower() for p in self.products]
        self.colours = [p.colour.lower() for p in self.products]

    @classmethod
    def from_config(cls, config: str | Path | dict) -> "Searcher":
        cfg = config if isinstance(config, dict) else load_yaml(config)
        catalog = Catalog.load(section(cfg, "catalog", CatalogConfig).dir)
        icfg = section(cfg, "index", IndexConfig)
        index = VectorIndex.load(icfg.dir, icfg.params)
        encoder = create_encoder(section(cfg, "encoder", EncoderConfig))
        return cls(catalog, encoder, index, section(cfg, "search", SearchConfig))

    # ------------------------------------------------------------------ facts
    def term_credit(self, term: Term) -> np.ndarray:
        """Per item, how well its facts back the term's value (ignoring negation): 1 for a
        structured attribute, `text_fact_credit` for a description word, times `family_credit`
        when only a family member matches ("blue" asked, a dark blue item); else 0."""
        credit = np.zeros(len(self.products), np.float32)
        for v in accepts(term.kind, term.value):
            closeness = 1.0 if v == term.value else self.cfg.family_credit
            for postings, source in ((self.weak_postings, self.cfg.text_fact_credit), (self.strong_postings, 1.0)):
                rows = postings.get((term.kind, v))
                if rows is not None:
                    credit[rows] = np.maximum(credit[rows], closeness * source)
        return credit

    def term_mask(self, term: Term) -> np.ndarray:
        """Items whose facts back the term's value at all (ignoring negation)."""
        return self.term_credit(term) > 0

    def filter_mask(self, filters: Filters) -> np.ndarray | None:
        if filters.is_empty():
            return None
        mask = np.ones(len(self.products), bool)
        if filters.category:
            needle = filters.category.strip().lower()
            mask &= np.array([needle in path for path in self.category_paths])
        if filters.colour:
            wanted = canonical("colour", filters.colour)
            if wanted is None:
                mask &= np.array([c == filters.colour.strip().lower() for c in self.colours])
            else:
                mask &= self.term_mask(Term("colour", wanted, filters.colour))
        if filters.price_min is not None:
            mask &= np.nan_to_num(self.prices, nan=-np.inf) >= filters.price_min
        if filters.price_max is not None:
            mask &= np.nan_to_num(self.prices, nan=np.inf) <= filters.price_max
        return mask

    # ------------------------------------------------------------------ ranking
    def _rank(self, qvec: np.ndarray, terms: list[Term], k: int, allowed: np.ndarray | None, exclude: set[int] = frozenset()) -> list[Hit]:
        n = len(self.products)
        k = max(1, min(int(k), n))
        _, dense_ids = self.index.search(qvec, min(n, self.cfg.candidates + len(exclude)), allowed)
        cand = {self.index.row[i] for i in dense_ids[0]}
        named = list(terms)
        credits = [self.term_credit(t) for t in named]
        masks = [c > 0 for c in credits]
        positive = [m for t, m in zip(named, masks) if not t.negated]
        if positive and self.cfg.attribute_weight > 0:
            full = np.logical_and.reduce(positive)
            if allowed is not None:
                full &= allowed
            rows = np.flatnonzero(full)
            if len(rows) > self.cfg.max_fact_candidates:  # keep the densest of a huge match set
                sims = np.asarray(self.index.vectors[rows]) @ qvec
                rows = rows[np.argpartition(-sims, self.cfg.max_fact_candidates)[: self.cfg.max_fact_candidates]]
            cand.update(rows.tolist())
        cand -= set(exclude)
        if not cand:
            return []
        rows = np.fromiter(cand, dtype=np.int64)
        dense = np.asarray(self.index.vectors[rows]) @ np.asarray(qvec, np.float32)
        fact = np.zeros(len(rows), np.float32)
        weights = [float(self.cfg.kind_weights.get(t.kind, 1.0)) for t in named]
        for t, c, w in zip(named, credits, weights):
            fact += w * (-(c[rows] > 0).astype(np.float32) if t.negated else c[rows])
        if named:
            fact /= sum(weights)
        score = dense + self.cfg.attribute_weight * fact
        top = np.argsort(-score, kind="stable")[:k]
        hits = []
        for j in top:
            row = int(rows[j])
            matched = [t.phrase for t, m in zip(named, masks) if not t.negated and m[row]]
            hits.append(Hit(self.index.ids[row], float(score[j]), float(dense[j]), matched))
        return hits

    def query_vector(self, query: str) -> np.ndarray:
        return self.encoder.encode_text([query])[0]

    # ------------------------------------------------------------------ doors
    def search(self, query: str | Query, k: int = 10, filters: Filters | dict | None = None) -> list[Hit]:
        """Items for a shopper's words (or a `Query` already read, e.g. chat's refined state)."""
        q = query if isinstance(query, Query) else read_query(query or "")
        if not q.text.strip():
            raise ValueError("query must not be empty")
        allowed = self.filter_mask(parse_filters(filters))
        return self._rank(self.query_vector(q.text), list(q.terms), k, allowed)

    def search_image(self, image, k: int = 10, filters: Filters | dict | None = None, text: str | None = None) -> list[Hit]:
        """Items that look like an image (a path or PIL image), optionally steered by text."""
        q = self.encoder.encode_image([image])[0]
        terms: list[Term] = []
        if text and text.strip():
            q = l2_normalise(q + self.query_vector(text))
            terms = list(read_query(text).terms)
        return self._rank(q, terms, k, self.filter_mask(parse_filters(filters)))

    def similar(self, item_id: str, k: int = 10, filters: Filters | dict | None = None) -> list[Hit]:
        """Items closest to a catalog item (itself excluded)."""
        if item_id not in self.index.row:
            raise KeyError(f"unknown item id {item_id!r}")
        row = self.index.row[item_id]
        return self._rank(self.index.vector(item_id), [], k, self.filter_mask(parse_filters(filters)), exclude={row})

    def user_vector(self, history: Sequence[str]) -> np.ndarray:
        """Recency-weighted mean of the history's item vectors (history oldest first)."""
        known = [i for i in history if i in self.index.row]
        if not known:
            raise ValueError("none of the history's items are in the catalog")
        n = len(known)
        weights = 0.5 ** (np.arange(n)[::-1] / max(self.cfg.history_half_life, 1e-6))
        vecs = np.stack([self.index.vector(i) for i in known])
        return l2_normalise((weights[:, None] * vecs).sum(0))

    def histories(self) -> dict[str, list[str]]:
        """Every shopper's purchased items, oldest first (file order breaks same-day ties); built once."""
        if self._histories is None:
            events: dict[str, list] = {}
            for n, it in enumerate(self.catalog.interactions):
                events.setdefault(it.user, []).append((it.timestamp, n, it.item))
            self._histories = {u: [item for _, _, item in sorted(ev)] for u, ev in events.items()}
        return self._histories

    def history_of(self, user: str) -> list[str]:
        """A shopper's purchased items, oldest first."""
        if user not in self.histories():
            raise KeyError(f"unknown user {user!r}")
        return self._histories[user]

    def recommend(self, history: Sequence[str], k: int = 10, query: str | None = None, filters: Filters | dict | None = None,
                  exclude_history: bool = True) -> list[Hit]:
        """Items for a shopper with this purchase history, blended with a query when given."""
        unknown = [i for i in history if i not in self.index.row]
        if unknown and len(unknown) == len(history):
            raise ValueError(f"unknown history item ids: {unknown[:5]}")
        u = self.user_vector(history)
        terms: list[Term] = []
        q = u
        if query and query.strip():
            w = self.cfg.query_weight
            q = l2_normalise(w * self.query_vector(query) + (1 - w) * u)
            terms = list(read_query(query).terms)
        exclude = {self.index.row[i] for i in history if i in self.index.row} if exclude_history else set()
        hits = self._rank(q, terms, k, self.filter_mask(parse_filters(filters)), exclude)
        hist_ids = [i for i in dict.fromkeys(history) if i in self.index.row]
        hist_vecs = np.stack([self.index.vector(i) for i in hist_ids])
        for h in hits:
            sims = hist_vecs @ self.index.vector(h.id)
            h.because = hist_ids[int(np.argmax(sims))]
        return hits


def build_index(config: str | Path | dict, command: str = "") -> VectorIndex:
    """`whyrec index build`: encode every catalog item (cached tower features) and save the index."""
    cfg = config if isinstance(config, dict) else load_yaml(config)
    ccfg = section(cfg, "catalog", CatalogConfig)
    ecfg = section(cfg, "encoder", EncoderConfig)
    icfg = section(cfg, "index", IndexConfig)
    catalog = Catalog.load(ccfg.dir)
    if len(catalog) == 0:
        raise ValueError(f"catalog at {ccfg.dir} is empty")
    encoder = create_encoder(ecfg)
    vectors = item_vectors(encoder, catalog, icfg.item_vectors)
    meta = {"encoder": ecfg.name, "heads": ecfg.heads, "item_vectors": icfg.item_vectors.__dict__, "catalog": ccfg.dir, "command": command}
    index = VectorIndex.build(vectors, catalog.ids, icfg.params, meta)
    index.save(icfg.dir)
    return index
