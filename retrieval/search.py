"""Search and recommendation over an index: dense, lexical (BM25) and catalog-fact retrieval, fused.

A query is read once, through the catalog's vocabulary (`retrieval.query.read_query` with
`Searcher.vocab`): the attribute values it names (colour, type, pattern, material, the catalog's
own columns, with synonyms, negation and similarity for unknown words), price bounds and free
words. Candidates are the dense top-N, the BM25 top-N and the items that match every named value;
each has a dense cosine, a BM25 score and a fact score (the kind-weighted share of named values the
item backs: 1 for a structured attribute, `text_fact_credit` for a word only its description uses;
a violated negation counts -1). `retrieval.fusion` turns the three into one ranking: `dense`,
`facts`, `bm25` alone, `rrf` (reciprocal rank fusion, the label-free default) or `fitted` (the
settings `whyrec index fit-fusion` chose for this catalog from pseudo-queries, saved beside the
index).

Beside the vector index (`index.dir`): `vocabulary.json` (+ `vocabulary_vectors.npy`), the BM25
index (`lexical/`) and `fusion.json`, all written atomically.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from retrieval.artifacts import file_stamp
from retrieval.catalog import Catalog, Product
from retrieval.config import load_yaml, section
from retrieval.encoders import EncoderConfig, ItemVectorConfig, create_encoder, encode_queries, item_vectors, l2_normalise
from retrieval.fusion import FIXED, RANKERS, FusionSettings, Signals, fit_fusion, fuse, load_settings, save_report
from retrieval.index import IndexParams, ItemVectors, build_index as build_vector_index, open_index
from retrieval.lexical import LexicalIndex
from retrieval.lru import LRUCache
from retrieval.query import Query, read_query
from retrieval.vocabulary import Term, Vocabulary, tokens

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
    backend: str | None = None  # faiss | milvus (None: params.backend, faiss by default)
    milvus_uri: str | None = None  # milvus: "" = milvus-lite file inside the index folder; http://host:19530 = a cluster
    milvus_token: str | None = None  # cluster credentials; better given as ${MILVUS_TOKEN}

    def __post_init__(self):
        for name in ("backend", "milvus_uri", "milvus_token"):  # index.backend etc. are the keys a config file uses
            if getattr(self, name) is not None:
                setattr(self.params, name, getattr(self, name))
        self.params.__post_init__()


@dataclass
class SearchConfig:
    """`search:` section: retrieval, fusion and personalisation settings."""

    ranker: str | None = None  # dense | facts | bm25 | rrf | fitted; None = fitted when fusion.json exists, else rrf
    attribute_weight: float = 1.0  # image/history search: score = dense + attribute_weight * facts (0 = dense only)
    candidates: int = 200  # dense and BM25 candidates per query (at least k)
    max_fact_candidates: int = 1_000  # items matching every named value added to the candidates (the densest, when more match)
    history_half_life: float = 5.0  # purchases: weight halves every this many newer purchases
    query_weight: float = 0.5  # recommend with a query: share of the query vector
    text_fact_credit: float = 0.5  # a value read only from the description counts this much
    family_credit: float = 0.8  # "green" asked, a khaki item: a family member counts less than the value itself
    # fit and material are preferences; type, colour, pattern and department decide what is asked for
    kind_weights: dict = field(default_factory=lambda: {"material": 0.5, "fit": 0.3})
    extra_kind_weight: float = 0.5  # a value of a catalog column the language pack does not know (usage, room, ...)
    similarity_weight: float = 0.8  # a product type read by the text tower's similarity, not by a phrase
    language: str = "en"  # language pack (retrieval/vocabulary_data/<language>.yaml)
    similarity_threshold: float = 0.65  # cosine for reading an unknown word as a catalog value
    fit_fusion: bool = True  # fit the fusion weights as part of `whyrec index build`
    fusion_queries: int = 300  # pseudo-queries written for fitting
    query_cache_size: int = 4096  # LRU of query text -> vector (repeated and paged queries skip the encoder); 0 = off

    def __post_init__(self):
        if self.ranker is not None and self.ranker not in RANKERS:
            raise ValueError(f"search.ranker must be one of {list(RANKERS)}, not {self.ranker!r}")


@dataclass
class Filters:
    """Metadata filters; every set field must hold."""

    category: str | None = None  # whole levels of the category path ("Menswear", "Menswear > Shoes"), case-insensitive
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
    bm25: float = 0.0  # lexical score (0 when the item's text shares no query word)
    facts: float = 0.0  # fact score in [-1, 1]


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
    """Text, image, similar-item and history-based retrieval over one catalog and its index.

    `vocab` is the catalog's vocabulary (what `read` reads queries with; chat and grounding may use
    it too), `lexical` the BM25 index, `fusion` the fitted settings (None when never fitted)."""

    def __init__(self, catalog: Catalog, encoder, index: ItemVectors, cfg: SearchConfig | None = None,
                 vocab: Vocabulary | None = None, lexical: LexicalIndex | None = None, fusion: FusionSettings | None = None,
                 facts_dir: str | Path | None = None, tables: dict | None = None):
        missing = [i for i in index.ids if i not in catalog]
        if missing:
            raise ValueError(f"index holds {len(missing)} ids the catalog lacks (e.g. {missing[:3]}); rebuild the index")
        if encoder.dim != index.dim:
            raise ValueError(f"encoder dimension {encoder.dim} != index dimension {index.dim}; rebuild the index with this encoder")
        self.catalog = catalog
        self.encoder = encoder
        self.index = index
        self.cfg = cfg or SearchConfig()
        # the catalog's own (lazy, columnar) product rows when the index holds them in catalog order
        self.products: Sequence[Product] = (catalog.products if list(index.ids) == catalog.ids
                                            else [catalog.by_id[i] for i in index.ids])
        if vocab is None:
            vocab = Vocabulary.from_catalog(Catalog(self.products), self.cfg.language, embed=text_embedder(encoder),
                                            similarity_threshold=self.cfg.similarity_threshold)
        elif vocab.embed is None:
            vocab.embed = text_embedder(encoder)
        self.vocab = vocab
        if lexical is None:
            lexical = LexicalIndex.build(self.products)
        if lexical.ids != list(index.ids):
            raise ValueError("the lexical index and the vector index hold different items; rebuild the index")
        self.lexical = lexical
        self.fusion = fusion
        self.query_cache = LRUCache(self.cfg.query_cache_size)
        # each named value's rows and credits (`term_facts`): common values recur across queries, and a
        # held term costs its postings (1M items: rarely over 1 MB; a 1 MB mask for the commonest), so
        # hundreds are held
        self.credit_cache = LRUCache(CREDIT_CACHE_SIZE)
        self.sources: dict[str, Any] = {}  # what from_config loaded from (a reload keeps what is unchanged)
        self._set_fact_tables(facts_dir, tables)

    def _set_fact_tables(self, facts_dir: str | Path | None, tables: dict | None = None) -> None:
        """The per-value postings (facts, colours, category levels) and prices: `tables` when given
        (a reload's unchanged ones), else read from the index folder when `whyrec index build` saved
        them for these very items and this vocabulary (a per-item Python pass over 1M products
        takes minutes), else computed now."""
        t0 = time.time()
        if tables is None and facts_dir:
            tables = load_fact_tables(facts_dir, facts_fingerprint(self.products, self.vocab))
        if tables is None:
            if facts_dir:
                log.warning("no fact tables for these items beside the index at %s: computing them now (run `whyrec index build`)", facts_dir)
            tables = fact_tables(self.products, self.vocab)
        for name in FACT_POSTINGS:  # handed out as they are (a filter's rows): never changed in place
            for rows in tables[name].values():
                rows.flags.writeable = False
        self.strong_postings, self.weak_postings = tables["strong"], tables["weak"]
        self.colour_postings, self.category_postings = tables["colour"], tables["category"]
        self.prices = tables["prices"]
        self.fact_tables = tables
        self.price_order = np.argsort(self.prices, kind="stable")  # priced items ascending, then the unpriced (NaN)
        self.n_priced = int((~np.isnan(self.prices)).sum())
        log.info("fact tables of %d items %s in %.1fs", len(self.products), "loaded" if facts_dir and tables.get("loaded") else "computed",
                 time.time() - t0)

    @cached_property
    def structured_values(self) -> list[dict[str, set[str]]]:
        """Per item, its structured (not text-read) values (fitting the fusion reads them)."""
        return [self.vocab.item_values(p, text=False) for p in self.products]

    @cached_property
    def title_tokens(self) -> list[set[str]]:
        return [set(tokens(p.title)) for p in self.products]

    def category_path(self, row: int) -> list[str]:
        return [" ".join(level.lower().split()) for level in self.products[row].category]

    @classmethod
    def from_config(cls, config: str | Path | dict, previous: "Searcher | None" = None) -> "Searcher":
        """The searcher a config describes. With `previous` (a reload), what it loaded from files
        that are unchanged since (`file_stamp`) and with the same settings is taken over, not loaded
        again: the catalog with its purchases and histories, the index with its vocabulary, BM25 and
        fact tables, the encoder. So a reload holds a second copy only of what changed."""
        cfg = config if isinstance(config, dict) else load_yaml(config)
        ccfg, icfg = section(cfg, "catalog", CatalogConfig), section(cfg, "index", IndexConfig)
        ecfg, scfg = section(cfg, "encoder", EncoderConfig), section(cfg, "search", SearchConfig)
        sources = {"catalog": file_stamp(ccfg.dir), "index": (file_stamp(icfg.dir), icfg.params), "encoder": ecfg}
        kept = {k for k, v in sources.items() if previous is not None and previous.sources.get(k) == v}
        catalog = previous.catalog if "catalog" in kept else Catalog.load(ccfg.dir)
        index = previous.index if "index" in kept else open_index(icfg.dir, icfg.params)
        encoder = previous.encoder if "encoder" in kept else create_encoder(ecfg)
        same_words = {"index", "encoder"} <= kept  # the vocabulary embeds unknown words with the encoder
        vocab, lexical, fusion = (previous.vocab, previous.lexical, previous.fusion) if same_words else load_search_artifacts(icfg.dir, index)
        tables = previous.fact_tables if same_words and "catalog" in kept else None
        if previous is not None:
            log.info("reload: kept %s from the previous searcher", sorted(kept) or "nothing")
        out = cls(catalog, encoder, index, scfg, vocab, lexical, fusion, facts_dir=icfg.dir, tables=tables)
        out.sources = sources
        return out

    # ------------------------------------------------------------------ reading
    def read(self, text: str) -> Query:
        """Read shopper text with this catalog's vocabulary (the one query reader, catalog-aware)."""
        return read_query(text or "", vocab=self.vocab)

    @property
    def default_ranker(self) -> str:
        if self.cfg.ranker:
            return self.cfg.ranker
        return "fitted" if self.fusion is not None else "rrf"

    def settings(self, ranker: str | None = None) -> FusionSettings:
        name = ranker or self.default_ranker
        if name not in RANKERS:
            raise ValueError(f"unknown ranker {name!r}; choose one of {list(RANKERS)}")
        if name == "fitted":
            if self.fusion is None:
                raise ValueError("no fitted fusion for this index; run `whyrec index fit-fusion` or choose another ranker")
            return self.fusion
        return FIXED[name]

    # ------------------------------------------------------------------ facts
    def term_credit(self, term: Term) -> np.ndarray:
        """Per item, how well its facts back the term's value (ignoring negation): 1 for a
        structured attribute, `text_fact_credit` for a description word, times `family_credit`
        when only a family member matches ("blue" asked, a dark blue item); else 0."""
        rows, credit = self.term_facts(term)
        out = np.zeros(len(self.products), np.float32)
        out[rows] = credit
        return out

    def term_facts(self, term: Term) -> tuple[np.ndarray, np.ndarray]:
        """The sorted rows whose facts back the term's value, and each one's credit (see
        `term_credit`); read-only, made once per term while the LRU holds them. A search reads
        credits at its candidates only (`credit_at`) and intersects rows, so no per-query pass
        over every item, and a held term costs its postings, not a 1M-item array."""
        rows, credit, _ = self._term_entry(term)
        return rows, credit

    def _term_entry(self, term: Term) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """`term_facts` and, for a value most items back ("women", "solid": over 1/8 of them), a
        membership mask too: intersecting with it is one gather, not a binary search per row."""
        def make() -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
            credit = self._term_credit(term)
            rows = self.term_rows(term)
            values = credit[rows]
            mask = None
            if len(rows) * 8 > len(self.products):
                mask = np.zeros(len(self.products), bool)
                mask[rows] = True
            for a in (rows, values, mask):
                if a is not None:
                    a.flags.writeable = False
            return rows, values, mask

        return self.credit_cache.get_or_make((term.kind, term.value, term.also), make)

    def credit_at(self, term: Term, rows: np.ndarray) -> np.ndarray:
        """The term's credit of these rows (0 where its facts do not back it)."""
        backed, credit = self.term_facts(term)
        at, found = sorted_positions(backed, rows)
        return np.where(found, credit[at], np.float32(0)) if len(backed) else np.zeros(len(rows), np.float32)

    def _term_credit(self, term: Term) -> np.ndarray:
        credit = np.zeros(len(self.products), np.float32)
        exact = {term.value, *term.also}
        accepted = set(self.vocab.accepts(term.kind, term.value))
        for v in term.also:
            accepted |= self.vocab.accepts(term.kind, v)
        for v in accepted:
            closeness = 1.0 if v in exact else self.cfg.family_credit
            for postings, source in ((self.weak_postings, self.cfg.text_fact_credit), (self.strong_postings, 1.0)):
                rows = postings.get((term.kind, v))
                if rows is not None:
                    credit[rows] = np.maximum(credit[rows], closeness * source)
        return credit

    def term_weight(self, term: Term) -> float:
        w = float(self.cfg.kind_weights.get(term.kind, 1.0 if term.kind in self.vocab.base_kinds else self.cfg.extra_kind_weight))
        return w * (self.cfg.similarity_weight if term.similarity is not None else 1.0)

    def term_rows(self, term: Term) -> np.ndarray:
        """Sorted rows whose facts back the term's value at all (the union of its postings, no
        per-item scan)."""
        accepted = set(self.vocab.accepts(term.kind, term.value))
        for v in term.also:
            accepted |= self.vocab.accepts(term.kind, v)
        parts = [postings[(term.kind, v)] for v in accepted for postings in (self.weak_postings, self.strong_postings)
                 if (term.kind, v) in postings]
        return union_rows(parts, len(self.products))

    def category_rows(self, category: str) -> np.ndarray:
        """Sorted rows whose category path holds `category` as whole levels ("Menswear", or
        "Menswear > Shoes" for consecutive levels), case-insensitive."""
        wanted = [" ".join(level.lower().split()) for level in category.split(">") if level.strip()]
        if not wanted:
            return np.zeros(0, np.int64)
        rows = self.category_postings.get(wanted[0], np.zeros(0, np.int64))
        for level in wanted[1:]:
            rows = np.intersect1d(rows, self.category_postings.get(level, np.zeros(0, np.int64)), assume_unique=True)
        if len(wanted) > 1:
            n = len(wanted)
            paths = {int(r): self.category_path(int(r)) for r in rows}
            rows = np.array([r for r in rows if any(paths[int(r)][i: i + n] == wanted for i in range(len(paths[int(r)])))],
                            dtype=np.int64)
        return rows

    def category_mask(self, category: str) -> np.ndarray:
        mask = np.zeros(len(self.products), bool)
        mask[self.category_rows(category)] = True
        return mask

    def price_rows(self, lo: float | None, hi: float | None, keep_unpriced: bool) -> np.ndarray:
        """Sorted rows priced within [lo, hi] (binary search on the price order), plus the unpriced
        ones when `keep_unpriced`."""
        priced = self.prices[self.price_order[: self.n_priced]]
        a = 0 if lo is None else int(np.searchsorted(priced, lo, side="left"))
        b = self.n_priced if hi is None else int(np.searchsorted(priced, hi, side="right"))
        parts = [self.price_order[a:max(a, b)]]
        if keep_unpriced:
            parts.append(self.price_order[self.n_priced:])
        return union_rows(parts, len(self.products), presorted=False)

    def filter_rows(self, filters: Filters) -> np.ndarray | None:
        """The rows every set filter allows, as sorted int64 postings intersected per query (None = no
        filter). The index takes them as they are (a FAISS ID selector, a Milvus expression)."""
        if filters.is_empty():
            return None
        parts = []
        if filters.category:
            parts.append(self.category_rows(filters.category))
        if filters.colour:
            wanted = self.vocab.canonical("colour", filters.colour)
            if wanted is None:
                parts.append(self.colour_postings.get(filters.colour.strip().lower(), np.zeros(0, np.int64)))
            else:
                parts.append(self.term_rows(Term("colour", wanted, filters.colour)))
        if filters.price_min is not None or filters.price_max is not None:
            parts.append(self.price_rows(filters.price_min, filters.price_max, keep_unpriced=False))
        return intersect(parts)

    # ------------------------------------------------------------------ ranking
    def signals(self, query: Query | None, qvec: np.ndarray | None, k: int, allowed: np.ndarray | None,
                exclude: set[int] = frozenset(), lexical: bool = True) -> Signals:
        """The candidates of a query and their dense, BM25 and fact scores (see module doc)."""
        n = len(self.products)
        want = min(n, max(self.cfg.candidates, int(k)) + len(exclude))
        allowed_mask = None
        if allowed is not None:
            allowed = np.asarray(allowed)
            if allowed.dtype == bool:
                allowed_mask, allowed = allowed, np.flatnonzero(allowed)
            else:
                allowed_mask = np.zeros(n, bool)
                allowed_mask[allowed] = True
        parts: list[np.ndarray] = []
        if qvec is not None:
            _, found = self.index.search_rows(qvec, want, allowed)
            parts.append(found[0][found[0] >= 0])
        bm25_all = None
        if lexical and query is not None:
            words = query.lexical_words
            if words:
                bm25_all = self.lexical.scores(words)
                nz = np.flatnonzero(bm25_all > 0)
                if allowed_mask is not None:  # only allowed rows become candidates, so only theirs are read
                    nz = nz[allowed_mask[nz]]
                if len(nz) > want:
                    nz = nz[np.argpartition(-bm25_all[nz], want - 1)[:want]]
                parts.append(nz)
        named = list(query.terms) if query is not None else []
        positive = [t for t in named if not t.negated]
        if positive:
            # the rows of every named value: the rarest value's rows, kept where the others credit them
            facts = sorted((self._term_entry(t) for t in positive), key=lambda e: len(e[0]))
            rows = facts[0][0]
            for backed, _, mask in facts[1:]:
                rows = rows[mask[rows] if mask is not None else in_sorted(backed, rows)]
            if allowed_mask is not None:
                rows = rows[allowed_mask[rows]]
            if len(rows) > self.cfg.max_fact_candidates and qvec is not None:
                # keep the densest of a large match set: the index searches within it (an ID selector);
                # the rest rank below them on the dense signal (and above them only through BM25, whose own top-N are candidates)
                _, found = self.index.search_rows(qvec, self.cfg.max_fact_candidates, rows)
                rows = found[0][found[0] >= 0]
            parts.append(rows)
        if qvec is None and not any(len(p) for p in parts):  # nothing matched lexically or by facts: catalog order
            parts.append((allowed if allowed is not None else np.arange(n))[:want])
        rows = np.unique(np.concatenate(parts).astype(np.int64, copy=False)) if parts else np.zeros(0, np.int64)
        if exclude:
            rows = rows[~np.isin(rows, np.fromiter(exclude, np.int64, len(exclude)))]
        dense = self.index.row_scores(qvec, rows) if qvec is not None and len(rows) else np.zeros(len(rows), np.float32)
        bm25 = bm25_all[rows].astype(np.float32) if bm25_all is not None else np.zeros(len(rows), np.float32)
        fact = np.zeros(len(rows), np.float32)
        violates = np.zeros(len(rows), bool)
        weights = [self.term_weight(t) for t in named]
        for t, w in zip(named, weights):
            c = self.credit_at(t, rows)
            if t.negated:
                hit = c > 0
                fact -= w * hit
                violates |= hit
            else:
                fact += w * c
        if query is not None and query.excluded_words:
            # words a negation covers ("without sleeves"): an item whose text says all of them counts as
            # breaking a description-read value
            says = np.logical_and.reduce([self.lexical.scores([w])[rows] > 0 for w in query.excluded_words])
            fact -= self.cfg.text_fact_credit * says
            weights.append(self.cfg.text_fact_credit)
        if weights:
            fact /= sum(weights)
        return Signals(rows, dense.astype(np.float32), bm25, fact, violates)

    def _rank(self, qvec: np.ndarray | None, query: Query | None, k: int, allowed: np.ndarray | None,
              settings: FusionSettings, exclude: set[int] = frozenset()) -> list[Hit]:
        n = len(self.products)
        k = max(1, min(int(k), n))
        sig = self.signals(query, qvec, k, allowed, exclude, lexical=settings.w_bm25 > 0)
        if len(sig.rows) == 0:
            return []
        score = fuse(sig, settings)
        top = np.argsort(-score, kind="stable")[:k]
        wanted = [t for t in (query.terms if query is not None else ()) if not t.negated]
        shown = sig.rows[top]
        backs = [self.credit_at(t, shown) > 0 for t in wanted]
        hits = []
        for n_, j in enumerate(top):
            row = int(sig.rows[j])
            matched = list(dict.fromkeys(t.phrase for t, b in zip(wanted, backs) if b[n_]))
            hits.append(Hit(self.index.ids[row], float(score[j]), float(sig.dense[j]), matched, None, float(sig.bm25[j]), float(sig.facts[j])))
        return hits

    def query_vector(self, query: str) -> np.ndarray:
        """The query's vector (the encoder's query side), from the LRU when the same text came lately.
        Read-only: callers build new arrays from it."""
        def encode() -> np.ndarray:
            vec = np.array(encode_queries(self.encoder, [query])[0], np.float32)
            vec.flags.writeable = False
            return vec

        return self.query_cache.get_or_make(query, encode)

    # ------------------------------------------------------------------ doors
    def search(self, query: str | Query, k: int = 10, filters: Filters | dict | None = None, ranker: str | None = None) -> list[Hit]:
        """Items for a shopper's words (or a `Query` already read, e.g. chat's refined state).
        `ranker`: dense | facts | bm25 | rrf | fitted (None = the configured default)."""
        q = query if isinstance(query, Query) else self.read(query or "")
        if not q.text.strip():
            raise ValueError("query must not be empty")
        settings = self.settings(ranker)
        allowed = self.filter_rows(parse_filters(filters))
        price = self.price_rows_of(q)
        if price is not None:
            allowed = price if allowed is None else intersect([allowed, price])
        # the dense top-N are always candidates, so every ranker fills k even when words and facts match few items
        return self._rank(self.query_vector(q.text), q, k, allowed, settings)

    def price_rows_of(self, q: Query) -> np.ndarray | None:
        """The price bounds a query names ("under 30"), as sorted rows; an item without a price stays in
        (the catalog cannot say it breaks the bound)."""
        if q.price_min is None and q.price_max is None:
            return None
        return self.price_rows(q.price_min, q.price_max, keep_unpriced=True)

    def _image_settings(self) -> FusionSettings:
        return FusionSettings("linear", 1.0, 0.0, self.cfg.attribute_weight)

    def search_image(self, image, k: int = 10, filters: Filters | dict | None = None, text: str | None = None) -> list[Hit]:
        """Items that look like an image (a path or PIL image), optionally steered by text."""
        q = self.encoder.encode_image([image])[0]
        query = None
        if text and text.strip():
            q = l2_normalise(q + self.query_vector(text))
            query = self.read(text)
        return self._rank(q, query, k, self.filter_rows(parse_filters(filters)), self._image_settings())

    def similar(self, item_id: str, k: int = 10, filters: Filters | dict | None = None) -> list[Hit]:
        """Items closest to a catalog item (itself excluded)."""
        if item_id not in self.index.row:
            raise KeyError(f"unknown item id {item_id!r}")
        row = self.index.row[item_id]
        return self._rank(self.index.vector(item_id), None, k, self.filter_rows(parse_filters(filters)), FIXED["dense"], exclude={row})

    def user_vector(self, history: Sequence[str]) -> np.ndarray:
        """Recency-weighted mean of the history's item vectors (history oldest first)."""
        known = [i for i in history if i in self.index.row]
        if not known:
            raise ValueError("none of the history's items are in the catalog")
        n = len(known)
        weights = 0.5 ** (np.arange(n)[::-1] / max(self.cfg.history_half_life, 1e-6))
        vecs = np.stack([self.index.vector(i) for i in known])
        return l2_normalise((weights[:, None] * vecs).sum(0))

    def histories(self):
        """Every shopper's purchases, oldest first, as CSR arrays (`retrieval.interactions.Histories`,
        built once per catalog and shared with the recommenders and the API)."""
        return self.catalog.interactions.histories()

    def history_of(self, user: str) -> list[str]:
        """A shopper's purchased items, oldest first."""
        items = self.catalog.interactions.history(user)
        if not items:
            raise KeyError(f"unknown user {user!r}")
        return items

    def recommend(self, history: Sequence[str], k: int = 10, query: str | None = None, filters: Filters | dict | None = None,
                  exclude_history: bool = True) -> list[Hit]:
        """Items for a shopper with this purchase history, blended with a query when given."""
        unknown = [i for i in history if i not in self.index.row]
        if unknown and len(unknown) == len(history):
            raise ValueError(f"unknown history item ids: {unknown[:5]}")
        u = self.user_vector(history)
        read = None
        q = u
        if query and query.strip():
            w = self.cfg.query_weight
            q = l2_normalise(w * self.query_vector(query) + (1 - w) * u)
            read = self.read(query)
        exclude = {self.index.row[i] for i in history if i in self.index.row} if exclude_history else set()
        hits = self._rank(q, read, k, self.filter_rows(parse_filters(filters)), self._image_settings(), exclude)
        hist_ids = [i for i in dict.fromkeys(history) if i in self.index.row]
        hist_vecs = np.stack([self.index.vector(i) for i in hist_ids])
        for h in hits:
            sims = hist_vecs @ self.index.vector(h.id)
            h.because = hist_ids[int(np.argmax(sims))]
        return hits


def union_rows(parts: Sequence[np.ndarray], n: int, presorted: bool = True) -> np.ndarray:
    """The sorted distinct rows of several row arrays (postings are sorted and distinct: one is
    returned as it is). Large unions go through a bitmap of the `n` rows, not a sort: a colour
    filter at 1M items unites postings of hundreds of thousands of rows per query."""
    parts = [np.asarray(p, np.int64) for p in parts if len(p)]
    if not parts:
        return np.zeros(0, np.int64)
    if len(parts) == 1 and presorted:
        return parts[0]
    total = sum(len(p) for p in parts)
    if total * 16 < n:
        return np.unique(np.concatenate(parts))
    mask = np.zeros(n, bool)
    for p in parts:
        mask[p] = True
    return np.flatnonzero(mask).astype(np.int64)


def intersect(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The rows in every sorted posting list, smallest first so each step shrinks the work."""
    parts = sorted(parts, key=len)
    rows = parts[0]
    for p in parts[1:]:
        rows = np.intersect1d(rows, p, assume_unique=True)
    return rows.astype(np.int64, copy=False)


def text_embedder(encoder):
    """The text tower (MiniLM) as a function phrases -> unit vectors: the encoder's own when it has
    one (lit), else a shared one loaded on first use."""
    towers = getattr(encoder, "towers", None)
    if towers is not None and hasattr(towers, "text"):
        return lambda texts: towers.text.features(list(texts))
    return _shared_text_tower


_TEXT_TOWER = None


def _shared_text_tower(texts):
    global _TEXT_TOWER
    if _TEXT_TOWER is None:
        from retrieval.encoders.towers import TextTower

        _TEXT_TOWER = TextTower()
    return _TEXT_TOWER.features(list(texts))


def load_search_artifacts(index_dir: str | Path, index: ItemVectors) -> tuple[Vocabulary | None, LexicalIndex | None, FusionSettings | None]:
    """The vocabulary, BM25 index and fitted fusion saved beside an index (None for each that is
    missing or stale; the Searcher then rebuilds the first two in memory and uses rrf)."""
    vocab = lexical = fusion = None
    try:
        vocab = Vocabulary.load(index_dir)
    except FileNotFoundError:
        log.warning("no vocabulary beside the index at %s: reading it from the catalog now (run `whyrec index build`)", index_dir)
    try:
        lexical = LexicalIndex.load(index_dir)
        if lexical.ids != list(index.ids):
            log.warning("the BM25 index at %s is stale (other items than the vector index); rebuilding it in memory", index_dir)
            lexical = None
    except FileNotFoundError:
        log.warning("no BM25 index beside the index at %s; building it in memory (run `whyrec index build`)", index_dir)
    fusion = load_settings(index_dir)
    return vocab, lexical, fusion


FACTS_FILE = "facts.npz"
CREDIT_CACHE_SIZE = 512


def sorted_positions(sorted_rows: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of `rows` stands in `sorted_rows`, and whether it is there at all (binary search:
    cost by len(rows), not by the catalog)."""
    if not len(sorted_rows) or not len(rows):
        return np.zeros(len(rows), np.int64), np.zeros(len(rows), bool)
    at = np.minimum(np.searchsorted(sorted_rows, rows), len(sorted_rows) - 1)
    return at, sorted_rows[at] == rows


def in_sorted(sorted_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which of `rows` are in `sorted_rows`."""
    return sorted_positions(sorted_rows, rows)[1]
FACT_POSTINGS = ("strong", "weak", "colour", "category")


def fact_tables(products: Sequence[Product], vocab: Vocabulary) -> dict[str, Any]:
    """Per-value postings (sorted rows) of the items' facts: `strong` (structured attributes) and
    `weak` (read from the text) per (kind, value), `colour` per colour name, `category` per path
    level; and the prices (NaN unknown). One pass over the products."""
    strong: dict[tuple[str, str], list[int]] = {}
    weak: dict[tuple[str, str], list[int]] = {}
    colours: dict[str, list[int]] = {}
    levels: dict[str, list[int]] = {}
    prices = np.full(len(products), np.nan)
    t0 = time.time()
    for row, p in enumerate(tqdm(products, desc="fact tables", unit="item", disable=len(products) < 100_000, mininterval=5)):
        structured = vocab.item_values(p, text=False)
        for kind, values in vocab.item_values(p).items():
            for v in values:
                (strong if v in structured.get(kind, ()) else weak).setdefault((kind, v), []).append(row)
        if p.price is not None:
            prices[row] = p.price
        colours.setdefault(p.colour.lower(), []).append(row)
        for level in {" ".join(level.lower().split()) for level in p.category}:  # whole levels: "Men" never matches "Garment"
            levels.setdefault(level, []).append(row)
    arr = lambda d: {key: np.array(rows, dtype=np.int64) for key, rows in d.items()}  # noqa: E731
    log.info("fact tables of %d items in %.1fs", len(products), time.time() - t0)
    return {"strong": arr(strong), "weak": arr(weak), "colour": arr(colours), "category": arr(levels), "prices": prices}


def facts_fingerprint(products: Sequence[Product], vocab: Vocabulary) -> str:
    """A digest of the items (their stored columns, in order) and the vocabulary that reads them."""
    import hashlib
    import json

    from retrieval.catalog import ProductTable

    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps(vocab.to_dict(), sort_keys=True, default=str).encode())
    if vocab.vectors is not None:
        h.update(np.ascontiguousarray(vocab.vectors).tobytes())
    if isinstance(products, ProductTable):
        h.update(str(products.table.schema).encode())
        for column in products.table.columns:
            for chunk in column.chunks:
                for buf in chunk.buffers():
                    h.update(b"-" if buf is None else memoryview(buf))
    else:
        for p in products:
            h.update(repr(p).encode())
    return h.hexdigest()


def save_fact_tables(directory: str | Path, tables: dict[str, Any], fp: str) -> Path:
    """Write the fact tables beside the index (one .npz: keys, concatenated rows and offsets per posting family)."""
    from retrieval.artifacts import atomic_path

    out: dict[str, np.ndarray] = {"fingerprint": np.array(fp), "prices": tables["prices"]}
    for name in FACT_POSTINGS:
        d = tables[name]
        keys = ["\x1f".join(k) if isinstance(k, tuple) else k for k in d]
        out[f"{name}.keys"] = np.array(keys, dtype=str) if keys else np.zeros(0, "<U1")
        out[f"{name}.offsets"] = np.cumsum([0] + [len(v) for v in d.values()]).astype(np.int64)
        out[f"{name}.rows"] = np.concatenate(list(d.values())) if d else np.zeros(0, np.int64)
    path = Path(directory) / FACTS_FILE
    with atomic_path(path) as tmp:
        np.savez(tmp, **out)
    return path


def load_fact_tables(directory: str | Path, fp: str) -> dict[str, Any] | None:
    """The saved fact tables when they are of these items and this vocabulary (`fp`), else None."""
    path = Path(directory) / FACTS_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        if str(z["fingerprint"]) != fp:
            log.warning("fact tables at %s are of other items or another vocabulary: not used", path)
            return None
        out: dict[str, Any] = {"prices": z["prices"], "loaded": True}
        for name in FACT_POSTINGS:
            keys, offsets, rows = z[f"{name}.keys"], z[f"{name}.offsets"], z[f"{name}.rows"]
            split = (lambda k: tuple(k.split("\x1f"))) if name in ("strong", "weak") else str
            out[name] = {split(str(k)): rows[offsets[i]: offsets[i + 1]] for i, k in enumerate(keys)}
    return out


def build_index(config: str | Path | dict, command: str = "", vectors: str | Path | np.ndarray | None = None) -> ItemVectors:
    """`whyrec index build`: encode every catalog item (cached tower features) and save the index,
    then the catalog's vocabulary, the BM25 index and (unless `search.fit_fusion` is off) the fitted
    fusion beside it. `vectors` (an .npy file or an array, one row per catalog id in catalog order,
    in the encoder's space) replaces the encoding: a large catalog whose vectors were made elsewhere."""
    cfg = config if isinstance(config, dict) else load_yaml(config)
    ccfg = section(cfg, "catalog", CatalogConfig)
    ecfg = section(cfg, "encoder", EncoderConfig)
    icfg = section(cfg, "index", IndexConfig)
    scfg = section(cfg, "search", SearchConfig)
    catalog = Catalog.load(ccfg.dir)
    if len(catalog) == 0:
        raise ValueError(f"catalog at {ccfg.dir} is empty")
    encoder = create_encoder(ecfg)
    meta = {"encoder": ecfg.name, "heads": ecfg.heads, "item_vectors": icfg.item_vectors.__dict__, "catalog": ccfg.dir, "command": command}
    if vectors is None:
        vectors = item_vectors(encoder, catalog, icfg.item_vectors)
    else:
        if not isinstance(vectors, np.ndarray):
            meta["vectors_file"] = str(vectors)
            vectors = np.load(vectors, mmap_mode="r")
        if vectors.ndim != 2 or vectors.shape[0] != len(catalog):
            raise ValueError(f"--vectors holds {vectors.shape} but the catalog has {len(catalog)} items: need one row per catalog id, in order")
        if vectors.shape[1] != encoder.dim:
            raise ValueError(f"--vectors are {vectors.shape[1]}-d but the encoder ({ecfg.name}) is {encoder.dim}-d: queries could not be compared")
        vectors = l2_normalise(vectors)
    index = build_vector_index(vectors, catalog.ids, icfg.params, meta)
    t0 = time.time()
    vocab = Vocabulary.from_catalog(catalog, scfg.language, embed=text_embedder(encoder), similarity_threshold=scfg.similarity_threshold)
    vocab.save(icfg.dir)
    t_vocab = time.time() - t0
    lexical = LexicalIndex.build(catalog.products)
    lexical.save(icfg.dir)
    t0 = time.time()
    save_fact_tables(icfg.dir, fact_tables(catalog.products, vocab), facts_fingerprint(catalog.products, vocab))
    index.meta["fact_tables_seconds"] = round(time.time() - t0, 2)
    index.meta["vocabulary_seconds"] = round(t_vocab, 2)
    index.meta["bm25_seconds"] = lexical.build_seconds
    log.info("vocabulary in %.1fs, BM25 in %.1fs, saved beside the index at %s", t_vocab, lexical.build_seconds, icfg.dir)
    if scfg.fit_fusion:
        searcher = Searcher(catalog, encoder, index, scfg, vocab, lexical, facts_dir=icfg.dir)
        try:
            report = fit_fusion(searcher, scfg.fusion_queries)
        except ValueError as e:  # e.g. a catalog without product types: search then uses rrf
            log.warning("fusion not fitted: %s", e)
            (Path(icfg.dir) / "fusion.json").unlink(missing_ok=True)  # never keep another build's weights
        else:
            save_report(report, icfg.dir)
            index.meta["fusion_seconds"] = report["seconds"]
            index.meta["fusion"] = report["settings"]
    index.save(icfg.dir)
    return index


def parse_shard(spec: str | None, env: dict | None = None) -> tuple[int, int]:
    """`I/N` (shard I of N, counted from 0) from a flag, else from the RANK/WORLD_SIZE that
    `accelerate launch` and torchrun set, else 0/1."""
    env = os.environ if env is None else env
    if spec is None:
        spec = f"{env.get('RANK', 0)}/{env.get('WORLD_SIZE', 1)}"
    i, sep, n = str(spec).partition("/")
    try:
        i, n = int(i), int(n)
    except ValueError:
        raise ValueError(f"shard {spec!r}: expected I/N, e.g. 0/4") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {spec!r}: need 0 <= I < N")
    return i, n


def shard_rows(n_items: int, shard: tuple[int, int]) -> np.ndarray:
    """The catalog rows of one shard: every N-th row from I (interleaved, so shards get a like mix
    of items with and without photos)."""
    i, n = shard
    return np.arange(i, n_items, n, dtype=np.int64)


def embed_shard(config: str | Path | dict, shard: tuple[int, int] = (0, 1)) -> dict:
    """`whyrec index embed`: encode one shard of the catalog into the encoder's feature cache (which
    saves as it goes: a killed run resumes, processes never overwrite each other's rows)."""
    cfg = config if isinstance(config, dict) else load_yaml(config)
    catalog = Catalog.load(section(cfg, "catalog", CatalogConfig).dir)
    ecfg = section(cfg, "encoder", EncoderConfig)
    if not ecfg.cache_dir:
        raise ValueError("encoder.cache_dir is not set: a sharded embedding has nowhere to leave its features")
    rows = shard_rows(len(catalog), shard)
    t0 = time.time()
    item_vectors(create_encoder(ecfg), catalog, section(cfg, "index", IndexConfig).item_vectors, rows)
    return {"shard": f"{shard[0]}/{shard[1]}", "items": int(len(rows)), "seconds": round(time.time() - t0, 1), "cache_dir": ecfg.cache_dir}


def fit_index_fusion(config: str | Path | dict, n_queries: int | None = None) -> dict:
    """`whyrec index fit-fusion`: fit the fusion of an existing index again and save the report beside it."""
    cfg = config if isinstance(config, dict) else load_yaml(config)
    searcher = Searcher.from_config(cfg)
    icfg = section(cfg, "index", IndexConfig)
    report = fit_fusion(searcher, n_queries or searcher.cfg.fusion_queries)
    save_report(report, icfg.dir)
    return report
