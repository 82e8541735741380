"""Recommendation baselines that score the full catalog for a shopper's purchase history.

popularity  purchase counts (optionally only those in a window before the shopper's last purchase:
            what sold lately, without looking at the future)
repeat      the shopper's own purchases first, most recent first, then popularity: fashion
            shoppers re-buy, and a model that does not beat this is not worth serving
tfidf       item-text kNN: TF-IDF of each item's text; an item scores the (recency-weighted) sum of
            its similarities to the shopper's items, each history item keeping its `neighbours` nearest
bpr         Bayesian personalised ranking matrix factorisation (torch, seeded)
content     the shopper's vector is the recency-weighted mean of their items' vectors (any item-vector
            matrix: the spine's encoder via `retrieval.encoders.base.item_vectors`, or test vectors)
hybrid      a weighted sum of the per-shopper standardised scores of the models above; the weights
            are chosen on a validation split (`select_weights`)

Every model returns a (shoppers x catalog items) float32 matrix; higher is better.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from eval import metrics as M

log = logging.getLogger(__name__)

DAY = np.timedelta64(1, "D")


@dataclass
class TrainData:
    """Training purchases indexed for scoring: chronological item indices and days per shopper."""

    item_ids: list[str]
    index: dict[str, int]
    rows_item: np.ndarray  # every training row, chronological
    rows_day: np.ndarray
    rows_user: np.ndarray
    users: list[str]
    hist_items: dict[str, np.ndarray]
    hist_days: dict[str, np.ndarray]

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def build(cls, train: pd.DataFrame, item_ids: Sequence[str]) -> "TrainData":
        from eval.splits import chronological

        item_ids = list(item_ids)
        index = {x: i for i, x in enumerate(item_ids)}
        f = chronological(train)
        f = f[f["item"].isin(index)]
        items = f["item"].map(index).to_numpy(np.int64)
        days = ((f["timestamp"].to_numpy("datetime64[ns]") - np.datetime64("1970-01-01")) / DAY).astype(np.float64)
        users = f["user"].to_numpy()
        hist_items: dict[str, np.ndarray] = {}
        hist_days: dict[str, np.ndarray] = {}
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([], int)
        ends = np.r_[starts[1:], len(users)]
        for s, e in zip(starts, ends):
            hist_items[users[s]] = items[s:e]
            hist_days[users[s]] = days[s:e]
        order = np.argsort(days, kind="stable")
        user_codes = pd.Index(list(hist_items)).get_indexer(users)
        return cls(item_ids, index, items[order], days[order], user_codes[order], list(hist_items), hist_items, hist_days)

    def history(self, user: str) -> tuple[np.ndarray, np.ndarray]:
        return self.hist_items.get(user, np.zeros(0, np.int64)), self.hist_days.get(user, np.zeros(0))

    def bought_mask(self, users: Sequence[str]) -> np.ndarray:
        """(len(users), n_items) True where the shopper bought the item in training."""
        mask = np.zeros((len(users), self.n_items), bool)
        for r, u in enumerate(users):
            mask[r, self.history(u)[0]] = True
        return mask


def recency_weights(days: np.ndarray, half_life_days: float | None) -> np.ndarray:
    """Weight of each history purchase: halves every `half_life_days` before the latest one (None: all 1)."""
    if not len(days) or half_life_days is None:
        return np.ones(len(days))
    return 0.5 ** ((days.max() - days) / float(half_life_days))


class Recommender:
    """fit on training purchases, then score shoppers over the whole catalog."""

    kind = "base"

    def fit(self, data: TrainData) -> "Recommender":
        self.data = data
        return self

    def score(self, users: Sequence[str]) -> np.ndarray:
        raise NotImplementedError


class Popularity(Recommender):
    kind = "popularity"

    def __init__(self, window_days: float | None = None):
        self.window_days = window_days

    def fit(self, data: TrainData) -> "Popularity":
        self.data = data
        self.counts = np.bincount(data.rows_item, minlength=data.n_items).astype(np.float64)
        return self

    def score(self, users: Sequence[str]) -> np.ndarray:
        base = (self.counts / (self.counts.max() + 1)).astype(np.float32)
        if self.window_days is None:
            return np.tile(base, (len(users), 1))
        out = np.empty((len(users), self.data.n_items), np.float32)
        for r, u in enumerate(users):
            _, days = self.data.history(u)
            if not len(days):
                out[r] = base
                continue
            now = days.max()
            lo, hi = np.searchsorted(self.data.rows_day, [now - self.window_days, now], side="right")
            # recent counts first; all-time counts (< 1) order the items that did not sell lately
            out[r] = np.bincount(self.data.rows_item[lo:hi], minlength=self.data.n_items) + base
        return out


class Repeat(Recommender):
    """History items first, the most recently bought first; then all-time popularity.

    The popularity part only orders the rest of the catalog, so it is scaled into [0, 1e-3): the
    ranking is the same as at any scale, but once standardised for a hybrid the scores say
    "bought before, and how recently" and leave the order of the other items to the other models.
    """

    kind = "repeat"
    FALLBACK_SCALE = 1e-3

    def fit(self, data: TrainData) -> "Repeat":
        self.data = data
        counts = np.bincount(data.rows_item, minlength=data.n_items).astype(np.float32)
        self.base = self.FALLBACK_SCALE * counts / (counts.max() + 1)
        return self

    def score(self, users: Sequence[str]) -> np.ndarray:
        out = np.tile(self.base, (len(users), 1))
        for r, u in enumerate(users):
            items, _ = self.data.history(u)
            if len(items):
                # later positions overwrite earlier ones: an item's score is its last purchase
                out[r, items] = 2.0 + np.arange(1, len(items) + 1) / len(items)
        return out


class TfidfKNN(Recommender):
    """Item-text kNN over TF-IDF vectors of `product_text` (scikit-learn)."""

    kind = "tfidf"

    def __init__(self, texts: Sequence[str], neighbours: int | None = 100, half_life_days: float | None = 60.0,
                 min_df: int = 2, ngram_max: int = 1):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.neighbours = neighbours
        self.half_life_days = half_life_days
        vec = TfidfVectorizer(min_df=min_df, ngram_range=(1, ngram_max), sublinear_tf=True, stop_words="english")
        self.X = vec.fit_transform(list(texts)).astype(np.float32).tocsr()
        self.XT = self.X.T.tocsr()

    def fit(self, data: TrainData) -> "TfidfKNN":
        if self.X.shape[0] != data.n_items:
            raise ValueError(f"tfidf has {self.X.shape[0]} item texts for {data.n_items} items")
        self.data = data
        return self

    def score(self, users: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(users), self.data.n_items), np.float32)
        for r, u in enumerate(tqdm(users, desc="tfidf kNN", unit="shopper", mininterval=5, disable=len(users) < 50)):
            items, days = self.data.history(u)
            if not len(items):
                continue
            uniq, inv = np.unique(items, return_inverse=True)
            w = np.bincount(inv, weights=recency_weights(days, self.half_life_days)).astype(np.float32)
            sims = (self.X[uniq] @ self.XT).toarray()
            if self.neighbours is not None and self.neighbours < sims.shape[1]:
                kth = np.partition(sims, -self.neighbours, axis=1)[:, -self.neighbours][:, None]
                sims[sims < kth] = 0.0
            out[r] = w @ sims
        return out


class BPR(Recommender):
    """Matrix factorisation trained with the BPR pairwise loss, uniform negatives, Adam."""

    kind = "bpr"

    def __init__(self, factors: int = 64, epochs: int = 40, lr: float = 0.01, reg: float = 1e-4, batch_size: int = 1024,
                 seed: int = 0, threads: int = 1):
        self.factors, self.epochs, self.lr, self.reg = factors, epochs, lr, reg
        self.batch_size, self.seed, self.threads = batch_size, seed, threads

    def fit(self, data: TrainData) -> "BPR":
        import torch

        self.data = data
        torch.set_num_threads(self.threads)
        gen = torch.Generator().manual_seed(self.seed)
        self.user_index = {u: i for i, u in enumerate(data.users)}
        pairs = np.unique(np.stack([data.rows_user, data.rows_item], 1), axis=0)
        pu = torch.from_numpy(pairs[:, 0])
        pi = torch.from_numpy(pairs[:, 1])
        U = torch.nn.Parameter(torch.randn(len(data.users), self.factors, generator=gen) * 0.05)
        V = torch.nn.Parameter(torch.randn(data.n_items, self.factors, generator=gen) * 0.05)
        b = torch.nn.Parameter(torch.zeros(data.n_items))
        opt = torch.optim.Adam([U, V, b], lr=self.lr)
        t0 = time.time()
        for _ in range(self.epochs):
            perm = torch.randperm(len(pairs), generator=gen)
            for s in range(0, len(pairs), self.batch_size):
                idx = perm[s : s + self.batch_size]
                u, i = pu[idx], pi[idx]
                j = torch.randint(0, data.n_items, (len(idx),), generator=gen)
                eu, ei, ej = U[u], V[i], V[j]
                x = (eu * (ei - ej)).sum(1) + b[i] - b[j]
                loss = -torch.nn.functional.logsigmoid(x).mean() + self.reg * (eu.pow(2).sum(1) + ei.pow(2).sum(1) + ej.pow(2).sum(1)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.U, self.V, self.b = U.detach().numpy(), V.detach().numpy(), b.detach().numpy()
        log.debug("bpr: %d pairs, %d epochs in %.1fs, last loss %.3f", len(pairs), self.epochs, time.time() - t0, loss.item())
        return self

    def score(self, users: Sequence[str]) -> np.ndarray:
        rows = np.array([self.user_index.get(u, -1) for u in users])
        out = np.tile(self.b.astype(np.float32), (len(users), 1))
        known = rows >= 0
        out[known] += self.U[rows[known]] @ self.V.T
        return out


class Content(Recommender):
    """Shopper vector = recency-weighted mean of their items' vectors; score = dot product."""

    kind = "content"

    def __init__(self, item_vectors: np.ndarray, half_life_days: float | None = 60.0):
        self.vectors = np.asarray(item_vectors, np.float32)
        if self.vectors.ndim != 2:
            raise ValueError("item vectors must be a (items, dim) matrix")
        self.half_life_days = half_life_days

    def fit(self, data: TrainData) -> "Content":
        if len(self.vectors) != data.n_items:
            raise ValueError(f"{len(self.vectors)} item vectors for {data.n_items} catalog items")
        self.data = data
        return self

    def score(self, users: Sequence[str]) -> np.ndarray:
        prof = np.zeros((len(users), self.vectors.shape[1]), np.float32)
        for r, u in enumerate(users):
            items, days = self.data.history(u)
            if len(items):
                w = recency_weights(days, self.half_life_days)
                prof[r] = (w[:, None] * self.vectors[items]).sum(0) / w.sum()
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
    """Weighted sum of standardised component scores (weights from `select_weights`)."""

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

    def score(self, users: Sequence[str]) -> np.ndarray:
        return blend({n: standardise(m.score(users)) for n, m in self.components.items() if self.weights.get(n, 0)}, self.weights)


# ----------------------------------------------------------------------------- weight selection
def simplex_grid(names: Sequence[str], step: float) -> list[dict[str, float]]:
    """All weight vectors on the simplex with the given step (weights sum to 1)."""
    n = int(round(1 / step))
    if n < 1 or abs(n * step - 1) > 1e-9:
        raise ValueError("hybrid grid step must divide 1 (0.5, 0.25, 0.2, 0.1, ...)")
    out = []
    for combo in itertools.product(range(n + 1), repeat=len(names) - 1):
        if sum(combo) <= n:
            parts = list(combo) + [n - sum(combo)]
            out.append({name: p / n for name, p in zip(names, parts)})
    return out


def user_ndcg(S: np.ndarray, targets: list[list[int]], keys: np.ndarray, excluded: np.ndarray | None, k: int = 10) -> np.ndarray:
    """NDCG@k per shopper (row) for a score matrix; fast path for one target per shopper."""
    if all(len(t) == 1 for t in targets):
        ranks, _ = M.single_target_ranks(S, np.array([t[0] for t in targets]), keys, excluded)
        return np.where(ranks <= k, 1.0 / np.log2(ranks + 1), 0.0)
    out = np.empty(len(targets))
    for r, t in enumerate(targets):
        ranks, _ = M.ranks_of(S[r], t, keys, None if excluded is None else excluded[r])
        out[r] = M.ndcg_at_k(ranks, k)
    return out


LOG_GRID = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def select_weights(standardised: dict[str, np.ndarray], targets: list[list[int]], keys: np.ndarray,
                   excluded: np.ndarray | None, step: float = 0.2, k: int = 10, search: str = "coordinate",
                   values: Sequence[float] = LOG_GRID, rounds: int = 4) -> tuple[dict[str, float], list[dict]]:
    """Weights with the best mean NDCG@k on validation scores; returns (weights, every blend tried).

    `simplex`: every point of the weight simplex at `step`. `coordinate` (default): start from the best
    single model, then change one weight at a time over `values` (a log grid) while validation NDCG
    improves. Weights far apart in size matter here: "what the shopper bought, most recent first,
    then text-similar items" is weight 1 on repeat and 0.01 on tfidf, which a coarse simplex misses.
    """
    names = list(standardised)
    if search not in ("simplex", "coordinate"):
        raise ValueError(f"hybrid weight search must be simplex or coordinate, not {search!r}")
    tried: dict[tuple, float] = {}

    def value(w: dict[str, float]) -> float:
        key = tuple(w[n] for n in names)
        if key not in tried:
            tried[key] = float(user_ndcg(blend(standardised, w), targets, keys, excluded, k).mean()) if any(key) else -1.0
        return tried[key]

    if search == "simplex":
        best = None
        for w in tqdm(simplex_grid(names, step), desc="hybrid weights", unit="blend", mininterval=5):
            if best is None or value(w) > value(best) + 1e-12:
                best = w
    else:
        best = max(({n: float(n == m) for n in names} for m in names), key=value)
        for _ in range(rounds):
            changed = False
            for n in names:
                for v in values:
                    w = {**best, n: float(v)}
                    if value(w) > value(best) + 1e-12:
                        best, changed = w, True
            if not changed:
                break
    top = max(best.values())
    best = {n: round(v / top, 6) for n, v in best.items()}  # scale-free: the largest weight is 1
    log.info("hybrid weights %s: validation ndcg@%d %.4f (%d blends tried)", best, k, max(tried.values()), len(tried))
    return best, [{"weights": dict(zip(names, key)), f"ndcg@{k}": v} for key, v in tried.items()]


# ----------------------------------------------------------------------------- factory
@dataclass
class ModelContext:
    """What models may need beyond purchases: item texts and (optionally) item vectors."""

    texts: list[str]
    item_vectors: np.ndarray | None = None


def create_recommender(kind: str, ctx: ModelContext, **params) -> Recommender:
    """A single model from its kind and parameters (the `models:` entries of an eval config)."""
    factories: dict[str, Callable[..., Recommender]] = {
        "popularity": lambda **p: Popularity(**p),
        "repeat": lambda **p: Repeat(**p),
        "tfidf": lambda **p: TfidfKNN(ctx.texts, **p),
        "bpr": lambda **p: BPR(**p),
        "content": lambda **p: Content(_need_vectors(ctx), **p),
    }
    if kind not in factories:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {sorted(factories)} or hybrid")
    try:
        return factories[kind](**params)
    except TypeError as err:
        raise ValueError(f"bad parameters for model {kind}: {err}") from None


def _need_vectors(ctx: ModelContext) -> np.ndarray:
    if ctx.item_vectors is None:
        raise ValueError("the content model needs item vectors: give --heads DIR or --item-vectors FILE.npy")
    return ctx.item_vectors
