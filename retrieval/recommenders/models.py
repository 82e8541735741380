"""Recommenders that score the whole catalog for purchase histories.

popularity  purchase counts, optionally only those in a window of days before "now" (the day the
            recommendation is asked for, the shopper's last purchase, or the training data's last day)
repeat      the shopper's own purchases first, most recent first, then popularity: fashion shoppers
            re-buy, and a model that does not beat this is not worth serving
tfidf       item-text kNN: an item scores the recency-weighted sum of its TF-IDF similarities to the
            shopper's items, each history item keeping its `neighbours` nearest (scikit-learn)
als / bpr   implicit-feedback matrix factorisation from the `implicit` library (CPU)
content     the shopper's vector is the recency-weighted mean of their items' vectors (any encoder's
            item vectors: the index's, `item_vectors(encoder, catalog)`, or test vectors)
hybrid      a weighted sum of per-shopper standardised scores of other models (weights from config,
            chosen offline by `whyrec eval rec` on a validation split)

Every model returns a (histories x catalog items) float32 matrix; higher is better.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from retrieval.lru import LRUCache
from retrieval.recommenders.data import History, TrainData, recency_weights

log = logging.getLogger(__name__)


class Recommender:
    """fit on training purchases, then score histories over the whole catalog."""

    kind = "base"

    def fit(self, data: TrainData) -> "Recommender":
        self.data = data
        return self

    def score_histories(self, histories: Sequence[History]) -> np.ndarray:
        raise NotImplementedError

    def fitted_state(self) -> dict | None:
        """What an expensive fit learned (arrays, sparse matrices, strings, nested dicts), to save
        beside the index (`retrieval.recommenders.saved`); None: refitting at start-up is cheap."""
        return None

    def restore(self, data: TrainData, state: dict | None) -> "Recommender":
        """Fitted on `data` from a saved `fitted_state` (the default refits: nothing was saved)."""
        return self.fit(data)

    def score(self, users: Sequence[str]) -> np.ndarray:
        """Scores for trained shoppers by id (their training histories)."""
        return self.score_histories(self.data.histories(users))


def _counts(data: TrainData) -> np.ndarray:
    return np.bincount(data.rows_item, minlength=data.n_items).astype(np.float64)


class Popularity(Recommender):
    kind = "popularity"

    ANCHORS = ("when", "user", "data")

    def __init__(self, window_days: float | None = None, anchor: str = "when"):
        if anchor not in self.ANCHORS:
            raise ValueError(f"popularity anchor must be one of {self.ANCHORS}, not {anchor!r}")
        self.window_days, self.anchor = window_days, anchor

    def fit(self, data: TrainData) -> "Popularity":
        self.data = data
        self.counts = _counts(data)
        self.base = (self.counts / (self.counts.max() + 1)).astype(np.float32) if len(self.counts) else self.counts
        return self

    def recent_counts(self, now: float | None) -> np.ndarray:
        """Purchases per item in the `window_days` days before day `now`, `now` itself excluded."""
        if self.window_days is None or now is None:
            return self.counts
        lo, hi = np.searchsorted(self.data.rows_day, [now - self.window_days, now], side="left")
        return np.bincount(self.data.rows_item[lo:hi], minlength=self.data.n_items).astype(np.float64)

    def score_histories(self, histories: Sequence[History]) -> np.ndarray:
        if self.window_days is None:
            return np.tile(self.base, (len(histories), 1))
        out = np.empty((len(histories), self.data.n_items), np.float32)
        cache: dict[float | None, np.ndarray] = {}
        for r, h in enumerate(histories):
            now = {"when": lambda: self.data.when(h), "user": lambda: None if h.now is None else h.now + 1.0,
                   "data": lambda: None if self.data.last_day is None else self.data.last_day + 1.0}[self.anchor]()
            if now is None:
                out[r] = self.base
                continue
            if now not in cache:
                # recent counts first; all-time counts (< 1) order the items that did not sell lately
                cache[now] = (self.recent_counts(now) + self.base).astype(np.float32)
            out[r] = cache[now]
        return out


class Repeat(Recommender):
    """History items first, the most recently bought first; then all-time popularity, scaled into
    [0, 1e-3) so that, standardised in a hybrid, the scores say "bought before, and how recently"."""

    kind = "repeat"
    FALLBACK_SCALE = 1e-3

    def fit(self, data: TrainData) -> "Repeat":
        self.data = data
        counts = _counts(data).astype(np.float32)
        self.base = self.FALLBACK_SCALE * counts / (counts.max() + 1)
        return self

    def score_histories(self, histories: Sequence[History]) -> np.ndarray:
        out = np.tile(self.base, (len(histories), 1))
        for r, h in enumerate(histories):
            if len(h):
                # later positions overwrite earlier ones: an item's score is its last purchase
                out[r, h.items] = 2.0 + np.arange(1, len(h) + 1) / len(h)
        return out


_NEIGHBOUR_CACHE: dict[tuple, sp.csr_matrix] = {}
FULL_TABLE_BELOW = 50_000  # tf-idf: the whole neighbour table below this many items; above it, only the rows histories use


class TfidfKNN(Recommender):
    """Item-text kNN over TF-IDF vectors of the item texts (scikit-learn). The item-item neighbour
    matrix depends only on the texts, so it is computed once per process and shared by every fit.

    Scoring reads only the neighbour rows of history items. Below FULL_TABLE_BELOW items the whole
    table is computed at once; above it (a 1M catalog: a full table is hours of sparse products)
    only the rows of the items histories hold are, on first use, with the same per-row arithmetic
    (so the same numbers). `fitted_state` saves those of the `saved_rows` most purchased items for
    serving (1M items: a row is ~10 ms, and 31M purchases touch most items); other rows are
    computed when a history first needs them and held in an LRU of `row_cache` rows. There, a
    history reads the rows of its `max_history` most recently bought items only: a shopper with
    4,000 purchases took 33 s cold, and with the default 60-day half-life the older items weigh
    little."""

    kind = "tfidf"

    def __init__(self, texts: Sequence[str], neighbours: int | None = 100, half_life_days: float | None = 60.0,
                 min_df: int = 2, ngram_max: int = 1, saved_rows: int = 20_000, row_cache: int = 50_000,
                 max_history: int = 100):
        self.neighbours = neighbours
        self.saved_rows, self.max_history = saved_rows, max_history
        self.half_life_days = half_life_days
        self.texts = list(texts)
        self.min_df, self.ngram_max = min_df, ngram_max
        self._key = (hash(tuple(self.texts)), min_df, ngram_max, neighbours)
        self._X: sp.csr_matrix | None = None
        self._XT: sp.csr_matrix | None = None
        self._rows: dict[int, sp.csr_matrix] = {}  # item row -> its neighbour row, from the saved fit (large catalogs)
        self._more_rows = LRUCache(row_cache)  # rows computed on first use since

    @property
    def X(self) -> sp.csr_matrix:
        """(items x terms) TF-IDF matrix, fitted on first use (or restored from a saved fit)."""
        if self._X is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            t0 = time.time()
            vec = TfidfVectorizer(min_df=min(self.min_df, max(1, len(self.texts))), ngram_range=(1, self.ngram_max),
                                  sublinear_tf=True, stop_words="english")
            self._X = vec.fit_transform(self.texts).astype(np.float32).tocsr()
            log.info("tfidf: %d texts vectorised in %.1fs", len(self.texts), time.time() - t0)
        return self._X

    @property
    def XT(self) -> sp.csr_matrix:
        if self._XT is None:
            self._XT = self.X.T.tocsr()
        return self._XT

    def fit(self, data: TrainData) -> "TfidfKNN":
        if self.X.shape[0] != data.n_items:
            raise ValueError(f"tfidf has {self.X.shape[0]} item texts for {data.n_items} items")
        self.data = data
        return self

    def similarities(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), n_items) cosine similarities of items to every item."""
        return (self.X[rows] @ self.XT).toarray()

    def _similarity_rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.X.shape[0]), np.float32)
        for r, i in enumerate(rows):
            x = self.X[int(i)]
            out[r] = self.XT[x.indices].T @ x.data
        return out

    def _neighbour_rows(self, rows: np.ndarray, chunk: int) -> sp.csr_matrix:
        """(len(rows), items) sparse: each row keeps its `neighbours` most similar items."""
        n, k = self.X.shape[0], min(self.neighbours, self.X.shape[0])
        parts = []
        full = len(rows) == n  # the whole table (small catalogs): sparse products, as always
        for s in tqdm(range(0, len(rows), chunk), desc="tfidf neighbours", unit="chunk", disable=len(rows) <= 4 * chunk):
            # a few rows against a large catalog: each row is the sum of its terms' rows of X^T, weighted (1M
            # items: 6 ms a row, against 28 ms for X times a dense block and more for the sparse product, whose
            # per-row result is nearly dense); the same sums in the same (term) order, so the same numbers
            sims = self.similarities(rows[s: s + chunk]) if full else self._similarity_rows(rows[s: s + chunk])
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(sims), 1))
            vals = np.take_along_axis(sims, top, 1)
            parts.append(sp.csr_matrix((vals.ravel(), top.ravel(), np.arange(0, vals.size + 1, k)), shape=(len(sims), n)))
        return sp.vstack(parts).tocsr() if parts else sp.csr_matrix((0, n), dtype=np.float32)

    def neighbour_matrix(self, chunk: int = 512) -> sp.csr_matrix:
        """(items x items) sparse: each row keeps its `neighbours` most similar items."""
        if self._key not in _NEIGHBOUR_CACHE:
            t0 = time.time()
            _NEIGHBOUR_CACHE[self._key] = self._neighbour_rows(np.arange(self.X.shape[0]), chunk)
            log.info("tfidf: %d x %d neighbours in %.1fs", self.X.shape[0], min(self.neighbours, self.X.shape[0]), time.time() - t0)
        return _NEIGHBOUR_CACHE[self._key]

    @property
    def _full_table(self) -> bool:
        """Whether the whole neighbour table is (or will be) made: small catalogs."""
        return self.X.shape[0] < FULL_TABLE_BELOW or self._key in _NEIGHBOUR_CACHE

    def neighbours_of(self, items: np.ndarray, chunk: int = 64) -> sp.csr_matrix:
        """The neighbour rows of `items` (sorted, distinct): the table's rows, or (large catalogs)
        the saved fit's rows and rows computed on first use (an LRU: memory stays bounded)."""
        if self._full_table:
            return self.neighbour_matrix()[items]
        got = {int(i): self._rows.get(int(i)) for i in items}
        for i, row in got.items():
            if row is None:
                got[i] = self._more_rows.get(i)
        new = np.array([i for i, row in got.items() if row is None], np.int64)
        if len(new):
            rows = self._neighbour_rows(new, chunk)
            for r, i in enumerate(new):
                got[int(i)] = rows[r]
                self._more_rows.put(int(i), rows[r])
        return sp.vstack([got[int(i)] for i in items]).tocsr()

    def fitted_state(self) -> dict:
        """The TF-IDF matrix and the neighbour rows of the `saved_rows` most purchased items (what
        scoring reads most)."""
        items = np.zeros(0, np.int64)
        if self.neighbours is not None and self.neighbours < self.X.shape[0]:
            items, counts = np.unique(self.data.hist_item, return_counts=True)
            if len(items) > self.saved_rows:
                items = np.sort(items[np.argsort(-counts, kind="stable")[: self.saved_rows]])
        return {"X": self.X, "neighbour_items": items, "neighbour_rows": self.neighbours_of(items) if len(items) else None}

    def restore(self, data: TrainData, state: dict | None) -> "TfidfKNN":
        if state is None:
            return self.fit(data)
        self._X = state["X"].astype(np.float32).tocsr()
        self._XT = None
        items, rows = state["neighbour_items"], state.get("neighbour_rows")
        if len(items):
            self._rows.update({int(i): rows[r] for r, i in enumerate(items)})
        return self.fit(data)

    def score_histories(self, histories: Sequence[History]) -> np.ndarray:
        out = np.zeros((len(histories), self.X.shape[0]), np.float32)
        knn = self.neighbours is not None and self.neighbours < self.X.shape[0]
        for r, h in enumerate(histories):
            if not len(h):
                continue
            uniq, inv = np.unique(h.items, return_inverse=True)
            w = np.bincount(inv, weights=recency_weights(h.days, self.half_life_days)).astype(np.float32)
            if knn and len(uniq) > self.max_history and not self._full_table:  # large catalogs: the latest items only
                last = np.zeros(len(uniq), np.int64)
                np.maximum.at(last, inv, np.arange(len(inv)))
                keep = np.sort(np.argsort(-last, kind="stable")[: self.max_history])
                uniq, w = uniq[keep], w[keep]
            out[r] = (self.neighbours_of(uniq).T @ w) if knn else w @ self.similarities(uniq)
        return out


def user_items_matrix(data: TrainData) -> sp.csr_matrix:
    """(shoppers x items) purchase counts."""
    m = sp.coo_matrix((np.ones(len(data.rows_item), np.float32), (data.rows_user, data.rows_item)),
                      shape=(len(data.users), data.n_items))
    return m.tocsr()


class _Factorisation(Recommender):
    """Shared scoring of the `implicit` models: user factors . item factors."""

    def _make_model(self):
        raise NotImplementedError

    def fit(self, data: TrainData) -> "_Factorisation":
        self._fit_model(self._make_model(), data)
        return self

    def _index(self, data: TrainData) -> None:
        self.data = data
        self.user_index = {u: i for i, u in enumerate(data.users)}
        self.user_items = user_items_matrix(data)

    def fitted_state(self) -> dict:
        return {"U": self.U, "V": self.V}

    def restore(self, data: TrainData, state: dict | None) -> "_Factorisation":
        if state is None:
            return self.fit(data)
        self._index(data)
        if len(state["V"]) != data.n_items or len(state["U"]) != (len(data.users) if self.user_items.nnz else 0):
            raise ValueError(f"saved {self.kind} factors do not fit these purchases; refit them")
        self.U, self.V = np.asarray(state["U"], np.float32), np.asarray(state["V"], np.float32)
        self.model = self._make_model()
        if self.user_items.nnz:
            self.model.user_factors, self.model.item_factors = self.U, self.V
        return self

    def _fit_model(self, model, data: TrainData) -> None:
        self._index(data)
        t0 = time.time()
        if self.user_items.nnz:
            model.fit(self.user_items, show_progress=False)
            self.U = np.asarray(model.user_factors, np.float32)
            self.V = np.asarray(model.item_factors, np.float32)
        else:
            self.U = np.zeros((0, 1), np.float32)
            self.V = np.zeros((data.n_items, 1), np.float32)
        self.model = model
        log.debug("%s: %d purchases fitted in %.1fs", self.kind, self.user_items.nnz, time.time() - t0)

    def user_vector(self, h: History) -> np.ndarray:
        raise NotImplementedError

    def score_histories(self, histories: Sequence[History]) -> np.ndarray:
        P = np.stack([self.user_vector(h) for h in histories]) if histories else np.zeros((0, self.V.shape[1]), np.float32)
        return (P @ self.V.T).astype(np.float32)


class ALS(_Factorisation):
    """Implicit ALS (Hu, Koren, Volinsky); a history's factors are solved against the item factors
    (`recalculate_user`), so a cart or a new shopper is scored the same way as a trained one."""

    kind = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 10.0, iterations: int = 15,
                 seed: int = 0, threads: int = 1):
        self.params = dict(factors=factors, regularization=regularization, alpha=alpha, iterations=iterations,
                           random_state=seed, num_threads=threads)

    def _make_model(self):
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(**self.params)

    def user_vector(self, h: History) -> np.ndarray:
        if not len(h) or not self.user_items.nnz:
            return np.zeros(self.V.shape[1], np.float32)
        row = sp.csr_matrix((np.ones(len(h), np.float32), (np.zeros(len(h), int), h.items)), shape=(1, self.data.n_items))
        return np.asarray(self.model.recalculate_user(0, row), np.float32).ravel()


class BPR(_Factorisation):
    """Bayesian personalised ranking (implicit). A trained shopper uses their factors; any other
    history the mean of its items' factors (BPR has no closed-form fold-in)."""

    kind = "bpr"

    def __init__(self, factors: int = 64, learning_rate: float = 0.05, regularization: float = 0.01, iterations: int = 100,
                 seed: int = 0, threads: int = 1):
        self.params = dict(factors=factors, learning_rate=learning_rate, regularization=regularization,
                           iterations=iterations, random_state=seed, num_threads=threads)

    def _make_model(self):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(**self.params)

    def user_vector(self, h: History) -> np.ndarray:
        if h.user is not None and h.user in self.user_index and len(self.U):
            return self.U[self.user_index[h.user]]
        if not len(h):
            return np.zeros(self.V.shape[1], np.float32)
        return self.V[h.items].mean(0)


class Content(Recommender):
    """Shopper vector = recency-weighted mean of their items' vectors; score = dot product."""

    kind = "content"

    def __init__(self, item_vectors: np.ndarray, half_life_days: float | None = 60.0):
        self.vectors = np.require(item_vectors, np.float32, ["A", "C"])  # aligned: BLAS, not numpy's slow loop
        if self.vectors.ndim != 2:
            raise ValueError("item vectors must be a (items, dim) matrix")
        self.half_life_days = half_life_days

    def fit(self, data: TrainData) -> "Content":
        if len(self.vectors) != data.n_items:
            raise ValueError(f"{len(self.vectors)} item vectors for {data.n_items} catalog items")
        self.data = data
        return self

    def score_histories(self, histories: Sequence[History]) -> np.ndarray:
        prof = np.zeros((len(histories), self.vectors.shape[1]), np.float32)
        for r, h in enumerate(histories):
            if len(h):
                w = recency_weights(h.days, self.half_life_days)
                prof[r] = (w[:, None] * self.vectors[h.items]).sum(0) / w.sum()
        return prof @ self.vectors.T


def standardise(scores: np.ndarray) -> np.ndarray:
    """Per-shopper z-scores, so models on different scales can be blended."""
    mu = scores.mean(1, keepdims=True)
    sd = scores.std(1, keepdims=True)
    return ((scores - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def blend(standardised: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    out = None
    for name, w in weights.items():
        if w == 0:
            continue
        out = w * standardised[name] if out is None else out + w * standardised[name]
    if out is None:
        raise ValueError("hybrid weights are all zero")
    return out


class Hybrid(Recommender):
    """Weighted sum of standardised component scores."""

    kind = "hybrid"

    def __init__(self, components: dict[str, Recommender], weights: dict[str, float]):
        missing = set(weights) - set(components)
        if missing:
            raise ValueError(f"hybrid weights name unknown components {sorted(missing)}")
        self.components, self.weights = components, weights

    def fit(self, data: TrainData) -> "Hybrid":
        self.data = data
        for name, model in self.components.items():
            if self.weights.get(name, 0):
                model.fit(data)
        return self

    def fitted_state(self) -> dict:
        return {"components": {n: m.fitted_state() for n, m in self.components.items() if self.weights.get(n, 0)}}

    def restore(self, data: TrainData, state: dict | None) -> "Hybrid":
        self.data = data
        saved = (state or {}).get("components", {})
        for name, model in self.components.items():
            if self.weights.get(name, 0):
                model.restore(data, saved.get(name))
        return self

    def score_histories(self, histories: Sequence[History]) -> np.ndarray:
        return blend({n: standardise(m.score_histories(histories)) for n, m in self.components.items() if self.weights.get(n, 0)},
                     self.weights)
