""""Goes well with": complementary items from co-occurrence sets.

Sets are groups of products chosen together: the rooms IKEA's stylists furnished (rooms.csv:
`product_ids` `|`-joined, a `room_category`), outfits, or, where a catalog has none, the
shoppers' same-day baskets. From them:

cooc      how often two items share a set (cosine-normalised counts)
category  how often their categories share a set (P(category b | category a in the set)), so an
          item never seen in a set still gets the bedside tables that go with beds; ranked within
          the category by how often the item itself appears in sets
series    same product series (an attribute, IKEA's `name`: "KURA")
context   items placed in the same kinds of room (cosine of their room-category distributions)
text      tf-idf similarity of the item texts (also the text baseline on its own)

The served score is a weighted sum of the per-query standardised components. Two baselines sit
beside them for evaluation: same category, and tf-idf text similarity. Every result carries the
strongest reason in words ("same series", "bought together by other shoppers", "often placed in
a bedroom with it").
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from retrieval.catalog import Catalog
from retrieval.interactions import Interactions
from retrieval.recommenders.models import standardise

log = logging.getLogger(__name__)

COMPONENTS = ("cooc", "category", "series", "context", "text")
BASELINES = ("same_category",)  # and text alone


@dataclass
class GoesWithConfig:
    """`recommend.goes_with:` section."""

    sets: str | None = None  # CSV of co-occurrence sets (rooms, outfits); None: purchase baskets
    set_column: str = "product_ids"  # `|`-joined item ids
    context_column: str | None = "room_category"  # kind of set ("Bedroom"), for "often placed in a bedroom"
    baskets: bool = True  # learn from same-day baskets when there are no sets
    series_attribute: str = "name"  # attribute that names a product series ("" = none)
    # chosen by 2-fold leave-one-room-out on the IKEA rooms (whyrec eval goes-with, blend_cv)
    weights: dict[str, float] = field(default_factory=lambda: {"cooc": 1.0, "series": 1.0, "category": 0.1, "text": 0.1})

    def __post_init__(self):
        unknown = set(self.weights) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"goes_with.weights: unknown component(s) {sorted(unknown)}; known {COMPONENTS}")


@dataclass
class CoSet:
    id: str
    rows: np.ndarray  # distinct catalog rows
    context: str = ""


def read_sets(path: str | Path, catalog: Catalog, column: str = "product_ids", context_column: str | None = "room_category") -> list[CoSet]:
    """Sets from a CSV; ids not in the catalog are dropped, sets with fewer than two known items skipped."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"co-occurrence sets {path} not found")
    row_of = {pid: i for i, pid in enumerate(catalog.ids)}
    out, dropped = [], 0
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if column not in (reader.fieldnames or []):
            raise ValueError(f"{path}: no {column!r} column (has {reader.fieldnames})")
        for n, rec in enumerate(reader):
            ids = [x.strip() for x in (rec.get(column) or "").split("|") if x.strip()]
            rows = sorted({row_of[x] for x in ids if x in row_of})
            dropped += sum(1 for x in ids if x not in row_of)
            if len(rows) >= 2:
                out.append(CoSet(rec.get("room_id") or rec.get("id") or str(n), np.array(rows, np.int64),
                                 (rec.get(context_column) or "").strip() if context_column else ""))
    log.info("%d co-occurrence sets from %s (%d ids not in the catalog)", len(out), path, dropped)
    return out


def basket_matrix(inter: Interactions, n_items: int) -> sp.csr_matrix:
    """(baskets x items) 0/1: each shopper's distinct items bought on one day, for the baskets of
    two items or more. Columnar: a basket is a run of one shopper's history (sorted by shopper, then
    time) on one day, so 31M purchases take seconds and no object per basket."""
    h = inter.histories()
    if not len(h.items):
        return sp.csr_matrix((0, n_items), dtype=np.float32)
    user = np.repeat(np.arange(len(h), dtype=np.int32), h.lengths())
    day = inter.timestamp[h.order].astype("datetime64[D]").astype(np.int64)
    new = np.ones(len(user), bool)
    new[1:] = (user[1:] != user[:-1]) | (day[1:] != day[:-1])
    basket = np.cumsum(new) - 1
    del user, day, new
    a = sp.csr_matrix((np.ones(len(basket), np.float32), (basket, h.items)), shape=(int(basket[-1]) + 1, n_items))
    a.sum_duplicates()
    a.data[:] = 1.0
    return a[np.diff(a.indptr) >= 2]


def basket_sets(inter: Interactions, n_items: int) -> list[CoSet]:
    """The same-day baskets (`basket_matrix`) as sets, for leave-one-set-out evaluation."""
    a = basket_matrix(inter, n_items)
    return [CoSet(str(k), a.indices[a.indptr[k]:a.indptr[k + 1]].astype(np.int64)) for k in range(a.shape[0])]


class GoesWith:
    """Complementary-item scores learned from co-occurrence sets."""

    def __init__(self, catalog: Catalog, cfg: GoesWithConfig | None = None, source: str = "rooms", ctx=None):
        """`ctx`: the served recommender's ModelContext, whose item texts' TF-IDF is shared (else made here)."""
        from retrieval.recommenders.context import ModelContext

        self.catalog, self.cfg, self.source = catalog, cfg or GoesWithConfig(), source
        self.n = len(catalog)
        key = self.cfg.series_attribute
        cats: dict[str, int] = {}
        series: dict[str, int] = {}
        cat = [cats.setdefault(path[-1].lower() if path else "", len(cats)) for path in catalog.field("category")]
        ser = [-1] * self.n
        if key:
            for i, attrs in enumerate(catalog.field("attributes")):
                value = str(attrs.get(key, "")).strip()
                if value:
                    ser[i] = series.setdefault(value.upper(), len(series))
        self.cat, self.cat_names = np.array(cat, np.int64), list(cats)
        self.series, self.series_names = np.array(ser, np.int64), list(series)
        self.X = (ctx if ctx is not None else ModelContext.from_catalog(catalog)).text_tfidf()

    def fit(self, sets: Sequence[CoSet]) -> "GoesWith":
        """Co-occurrence statistics of items, categories and contexts over `sets`."""
        rows = np.repeat(np.arange(len(sets)), [len(s.rows) for s in sets])
        cols = np.concatenate([s.rows for s in sets]) if sets else np.zeros(0, np.int64)
        A = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(sets), self.n))  # sets x items
        return self.fit_matrix(A, sets)

    def fit_matrix(self, A: sp.csr_matrix, sets: Sequence[CoSet] = ()) -> "GoesWith":
        """The same from a (sets x items) 0/1 matrix; `sets` only for their contexts (rooms)."""
        n, nc = self.n, len(self.cat_names)
        rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
        cols = A.indices
        self.freq = np.asarray(A.sum(0)).ravel()
        self.C = (A.T @ A).tocsr()
        self.C.setdiag(0)
        self.C.eliminate_zeros()
        Acat = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, self.cat[cols])), shape=(A.shape[0], nc))
        Acat.sum_duplicates()  # per set, how many items of each category
        twice = np.asarray((Acat >= 2).sum(0)).ravel()
        Acat.data[:] = 1.0
        self.cat_freq = np.asarray(Acat.sum(0)).ravel()
        self.CC = (Acat.T @ Acat).toarray()
        np.fill_diagonal(self.CC, twice)  # a category goes with itself only where sets hold two of it (chairs)
        contexts = sorted({s.context for s in sets if s.context})
        self.contexts = contexts
        if contexts:
            cidx = {c: i for i, c in enumerate(contexts)}
            D = np.zeros((n, len(contexts)), np.float32)
            for s in sets:
                if s.context:
                    D[s.rows, cidx[s.context]] += 1
            self.context_counts = D
            norm = np.linalg.norm(D, axis=1, keepdims=True)
            self.context_dist = D / np.where(norm > 0, norm, 1)
        else:
            self.context_counts = self.context_dist = None
        self.n_sets = A.shape[0]
        return self

    def components(self, query: Sequence[int]) -> dict[str, np.ndarray]:
        """Each component's (and baseline's) score of every item for a set of query rows."""
        q = np.asarray(list(query), np.int64)
        out: dict[str, np.ndarray] = {}
        f = np.sqrt(np.maximum(self.freq, 1))
        # shared sets over sqrt(freq_q * freq_j): cosine-normalised, so popular items do not swamp the list
        out["cooc"] = np.asarray((self.C[q].multiply(1.0 / f[q][:, None])).sum(0)).ravel() / f if len(q) else np.zeros(self.n)
        p_cat = (self.CC[self.cat[q]] / np.maximum(self.cat_freq[self.cat[q]], 1)[:, None]).sum(0)  # P(category b | a)
        out["category"] = p_cat[self.cat] * np.log1p(1 + self.freq)
        out["series"] = np.zeros(self.n)
        for s in self.series[q]:
            if s >= 0:
                out["series"] += self.series == s
        out["context"] = (self.context_dist @ self.context_dist[q].sum(0)) if self.context_dist is not None else np.zeros(self.n)
        out["same_category"] = np.bincount(self.cat[q], minlength=len(self.cat_names))[self.cat].astype(float) + 1e-3 * np.log1p(self.freq)
        out["text"] = np.asarray((self.X @ self.X[q].T).sum(1)).ravel()
        return out

    def score(self, query: Sequence[int], comps: dict[str, np.ndarray] | None = None) -> np.ndarray:
        comps = comps or self.components(query)
        used = {c: w for c, w in self.cfg.weights.items() if w and comps[c].std() > 0}
        if not used:
            return comps["text"]
        return sum(w * standardise(comps[c][None, :])[0] for c, w in used.items())

    def reason(self, query: Sequence[int], item: int, comps: dict[str, np.ndarray]) -> tuple[str, str]:
        """(kind, words) of the strongest reason an item goes with the query items."""
        q = list(query)
        s = self.series[item]
        if s >= 0 and any(self.series[i] == s for i in q):
            return "same_series", f"Same series ({self.series_names[s]})."
        shared = max((self.C[i, item] for i in q), default=0)
        if shared > 0:
            if self.source == "baskets":
                return "bought_together", "Bought together by other shoppers."
            ctx = self._top_context(item)
            where = f" in a {ctx.lower()}" if ctx else ""
            return "placed_together", f"Often placed{where} with it ({int(shared)} room{'s' if shared != 1 else ''})."
        if comps["category"][item] > 0:
            a = self.cat_names[self.cat[q[0]]] if q else ""
            b = self.cat_names[self.cat[item]]
            what = "rooms" if self.source == "rooms" else "baskets"
            return "category_pair", f"A {b} often goes with a {a} in {what}." if a else f"A {b} often completes such {what}."
        return "similar", "Similar in style and description."

    def _top_context(self, item: int) -> str:
        if self.context_counts is None or self.context_counts[item].sum() == 0:
            return ""
        return self.contexts[int(np.argmax(self.context_counts[item]))]

    def goes_with(self, item_ids: Sequence[str], k: int = 10) -> list[tuple[str, float, str, str]]:
        """(id, score, reason kind, reason words) of the k items that go best with `item_ids`."""
        row_of = {pid: i for i, pid in enumerate(self.catalog.ids)}
        q = [row_of[i] for i in item_ids if i in row_of]
        if not q:
            raise KeyError(f"unknown item ids {list(item_ids)[:3]}")
        comps = self.components(q)
        s = self.score(q, comps).astype(np.float64)
        s[q] = -np.inf
        k = max(1, min(k, self.n - len(q)))
        top = np.argpartition(-s, k - 1)[:k]
        top = top[np.lexsort((top, -s[top]))]
        return [(self.catalog.ids[j], float(s[j]), *self.reason(q, int(j), comps)) for j in top]


def build_goes_with(catalog: Catalog, cfg: GoesWithConfig, ctx=None) -> GoesWith | None:
    """The served model: rooms/outfit sets where configured, else the purchases' same-day baskets
    (None: no data). `ctx`: the served recommender's ModelContext (its item texts' TF-IDF is shared)."""
    if cfg.sets:
        return GoesWith(catalog, cfg, "rooms", ctx).fit(read_sets(cfg.sets, catalog, cfg.set_column, cfg.context_column))
    if cfg.baskets and len(catalog.interactions):
        baskets = basket_matrix(catalog.interactions, len(catalog))
        if baskets.shape[0]:
            log.info("goes-with: %d same-day baskets of two items or more", baskets.shape[0])
            return GoesWith(catalog, cfg, "baskets", ctx).fit_matrix(baskets)
    log.warning("goes-with: no co-occurrence sets and no multi-item baskets; not served")
    return None
