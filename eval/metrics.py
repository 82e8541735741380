"""Ranking metrics, exact ranks over a full catalog, and bootstrap confidence intervals.

Every metric is computed from the 1-based *ranks* of a query's relevant items among its
candidates (all catalog items a model may show). Working from ranks rather than from cut-off
lists keeps AUC and MRR exact over the whole catalog, and lets the same numbers be checked by
hand from a short ranked list (`ranks_in_list`).

Ties in scores are broken by a fixed per-item key (`tie_keys`, a seeded random permutation),
the same for every model, so a model with many equal scores (popularity: most items were
never bought) is neither helped nor hurt by catalog order.

Full-catalog versus sampled metrics: `auc` ranks the relevant item against *every* other
candidate; `sampled_metrics` against N negatives drawn at random, as many papers do. Uniform
sampled AUC estimates the full AUC without bias (it is only noisier), but sampled hit@k and NDCG@k
are far higher than their full-catalog values (Krichene & Rendle, KDD 2020), so every name says
which one it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np

METRIC_NAMES = ("recall", "hit", "precision", "ndcg", "mrr", "map", "auc")


# ----------------------------------------------------------------------------- one query, from ranks
def _ranks(ranks: Sequence[float]) -> np.ndarray:
    r = np.sort(np.asarray(ranks, dtype=np.float64))
    if r.size and r[0] < 1:
        raise ValueError("ranks are 1-based")
    return r


def recall_at_k(ranks: Sequence[float], k: int) -> float:
    """Share of the relevant items found in the top k."""
    r = _ranks(ranks)
    return float((r <= k).sum() / r.size) if r.size else 0.0


def hit_rate_at_k(ranks: Sequence[float], k: int) -> float:
    """1 if any relevant item is in the top k (equals recall@k with one relevant item)."""
    r = _ranks(ranks)
    return float(bool(r.size) and r[0] <= k)


def precision_at_k(ranks: Sequence[float], k: int) -> float:
    """Relevant items in the top k, divided by k."""
    return float((_ranks(ranks) <= k).sum() / k)


def reciprocal_rank(ranks: Sequence[float]) -> float:
    """1 / rank of the first relevant item (MRR is its mean over queries)."""
    r = _ranks(ranks)
    return float(1.0 / r[0]) if r.size else 0.0


def ndcg_at_k(ranks: Sequence[float], k: int) -> float:
    """Binary-relevance NDCG@k: sum of 1/log2(rank+1) over hits, over the ideal for min(|rel|, k) items."""
    r = _ranks(ranks)
    if not r.size:
        return 0.0
    dcg = float(np.sum(1.0 / np.log2(r[r <= k] + 1)))
    ideal = float(np.sum(1.0 / np.log2(np.arange(1, min(r.size, k) + 1) + 1)))
    return dcg / ideal


def average_precision(ranks: Sequence[float]) -> float:
    """Mean over relevant items of precision at that item's rank (MAP is its mean over queries)."""
    r = _ranks(ranks)
    if not r.size:
        return 0.0
    return float(np.mean(np.arange(1, r.size + 1) / r))


def auc(ranks: Sequence[float], n_candidates: int) -> float:
    """Full-catalog AUC: share of (relevant, non-relevant) candidate pairs ordered correctly.

    The relevant item at rank r_i (i-th relevant, 1-based) has r_i - i non-relevant items above it.
    """
    r = _ranks(ranks)
    n_neg = n_candidates - r.size
    if not r.size or n_neg <= 0:
        return float("nan")
    above = r - np.arange(1, r.size + 1)
    return float(1.0 - np.mean(np.minimum(above, n_neg)) / n_neg)


def ranking_metrics(ranks: Sequence[float], n_candidates: int, ks: Sequence[int] = (10,)) -> dict[str, float]:
    """All metrics of one query: recall@k, hit@k, precision@k, ndcg@k for each k; mrr, map, auc."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranks, k)
        out[f"hit@{k}"] = hit_rate_at_k(ranks, k)
        out[f"precision@{k}"] = precision_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    out["mrr"] = reciprocal_rank(ranks)
    out["map"] = average_precision(ranks)
    out["auc"] = auc(ranks, n_candidates)
    return out


def ranks_in_list(ranked: Sequence[Hashable], relevant: set, n_candidates: int | None = None) -> list[int]:
    """1-based ranks of the relevant items in a ranked list. Relevant items missing from the
    list are placed after it (at n_candidates, the worst ranks), so truncated lists stay honest."""
    pos = {x: i + 1 for i, x in enumerate(ranked)}
    found = sorted(pos[x] for x in relevant if x in pos)
    missing = len(relevant) - len(found)
    if missing:
        n = n_candidates if n_candidates is not None else len(ranked) + missing
        found += list(range(n - missing + 1, n + 1))
    return found


# ----------------------------------------------------------------------------- full-catalog ranks
def tie_keys(n_items: int, seed: int = 0) -> np.ndarray:
    """A fixed random key per item: among equal scores, the lower key ranks first."""
    return np.random.default_rng(seed).permutation(n_items).astype(np.int64)


def ranks_of(scores: np.ndarray, targets: Sequence[int], keys: np.ndarray, excluded: np.ndarray | None = None) -> tuple[list[float], int]:
    """Exact 1-based ranks of `targets` (item indices) under `scores` over the full catalog.

    `excluded` (bool mask) removes items from the ranking; an excluded target cannot be shown,
    so it is placed last (rank n_candidates). Returns (ranks, n_candidates).
    """
    scores = np.asarray(scores)
    valid = np.ones(scores.shape[0], bool) if excluded is None else ~excluded
    n_cand = int(valid.sum())
    ranks = []
    for t in targets:
        if not valid[t]:
            ranks.append(float(n_cand + 1))  # below every candidate
            continue
        s = scores[t]
        above = (scores > s) | ((scores == s) & (keys < keys[t]))
        ranks.append(float(np.count_nonzero(above & valid) + 1))
    # two excluded targets share rank n+1: spread them so ranks stay distinct and worst-first
    ranks.sort()
    for i in range(1, len(ranks)):
        if ranks[i] <= ranks[i - 1]:
            ranks[i] = ranks[i - 1] + 1
    return ranks, n_cand + sum(1 for t in targets if not valid[t])


def single_target_ranks(scores: np.ndarray, targets: np.ndarray, keys: np.ndarray, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised `ranks_of` for one target per row: scores (U, N), targets (U,), excluded (U, N).
    Returns (ranks, n_candidates) per row; an excluded target is ranked last (n_candidates)."""
    rows = np.arange(scores.shape[0])
    s_t = scores[rows, targets][:, None]
    above = (scores > s_t) | ((scores == s_t) & (keys[None, :] < keys[targets][:, None]))
    if excluded is None:
        return above.sum(1).astype(np.float64) + 1, np.full(len(rows), scores.shape[1], np.int64)
    valid = ~excluded
    n_cand = valid.sum(1)
    hidden = excluded[rows, targets]
    ranks = (above & valid).sum(1).astype(np.float64) + 1
    ranks[hidden] = n_cand[hidden] + 1
    return ranks, n_cand + hidden


SCORE_CELLS = 1 << 25  # (shoppers x items) scores held at once: 128 MB of float32, whatever the catalog size


def score_batch_rows(n_items: int, most: int) -> int:
    """How many shoppers to score at once: at most `most`, and never more than SCORE_CELLS cells
    (1,024 shoppers x 1M items would be 4 GB)."""
    return max(1, min(int(most), SCORE_CELLS // max(1, int(n_items))))


def top_k(scores: np.ndarray, k: int, keys: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
    """Indices of the k best items (same tie-break as `ranks_of`)."""
    s = np.asarray(scores, dtype=np.float64).copy()
    if excluded is not None:
        s[excluded] = -np.inf
    k = min(k, s.size)
    part = np.argpartition(-s, k - 1)[:k] if k < s.size else np.arange(s.size)
    # widen to every item tied with the k-th score so the tie-break is exact
    kth = s[part].min()
    cand = np.flatnonzero(s >= kth)
    order = np.lexsort((keys[cand], -s[cand]))
    out = cand[order][:k]
    if excluded is not None:
        out = out[~excluded[out]]
    return out


def sampled_metrics(scores: np.ndarray, targets: Sequence[int], keys: np.ndarray, n_negatives: int, rng: np.random.Generator,
                    excluded: np.ndarray | None = None, k: int = 10) -> dict[str, float]:
    """AUC, hit@k and NDCG@k of each target ranked against `n_negatives` non-relevant candidates
    drawn uniformly (with replacement), averaged over the targets.

    Uniform sampled AUC is an unbiased (only noisier) estimate of the full-catalog AUC; sampled
    hit@k / NDCG@k are not: ranking among 100 items instead of thousands inflates them a lot.
    """
    scores = np.asarray(scores)
    valid = np.ones(scores.shape[0], bool) if excluded is None else ~excluded
    pool_mask = valid.copy()
    pool_mask[list(targets)] = False
    pool = np.flatnonzero(pool_mask)
    if not len(pool) or not len(targets):
        return {"auc": float("nan"), f"hit@{k}": float("nan"), f"ndcg@{k}": float("nan")}
    neg = rng.choice(pool, size=n_negatives, replace=True)
    wins, hits, gains = [], [], []
    for t in targets:
        if not valid[t]:  # cannot be shown: below every negative
            wins.append(0.0)
            hits.append(0.0)
            gains.append(0.0)
            continue
        s = scores[t]
        beat = (s > scores[neg]) | ((s == scores[neg]) & (keys[t] < keys[neg]))
        rank = n_negatives - int(beat.sum()) + 1
        wins.append(float(beat.mean()))
        hits.append(float(rank <= k))
        gains.append(1.0 / np.log2(rank + 1) if rank <= k else 0.0)
    return {"auc": float(np.mean(wins)), f"hit@{k}": float(np.mean(hits)), f"ndcg@{k}": float(np.mean(gains))}


def sampled_auc(scores: np.ndarray, targets: Sequence[int], keys: np.ndarray, n_negatives: int, rng: np.random.Generator,
                excluded: np.ndarray | None = None) -> float:
    """AUC against `n_negatives` non-relevant candidates drawn uniformly (see `sampled_metrics`)."""
    return sampled_metrics(scores, targets, keys, n_negatives, rng, excluded)["auc"]


# ----------------------------------------------------------------------------- confidence intervals
@dataclass
class Estimate:
    """A mean with its bootstrap percentile interval."""

    mean: float
    low: float
    high: float
    n: int

    def fmt(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
                 stat: Callable[[np.ndarray], float] | None = None) -> Estimate:
    """Percentile bootstrap interval of the mean (or `stat`) of per-query values (NaNs dropped)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not v.size:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    stat = stat or (lambda x: x.mean(axis=-1))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    boots = np.asarray(stat(v[idx]))
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    point = float(np.asarray(stat(v[None, :])).reshape(-1)[0])
    return Estimate(point, float(lo), float(hi), int(v.size))


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> Estimate:
    """Interval of mean(a - b) over the same queries (paired: both models ranked for each query)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("paired values need the same queries")
    keep = ~(np.isnan(a) | np.isnan(b))
    return bootstrap_ci(a[keep] - b[keep], n_boot, alpha, seed)


def sample_size_two_means(delta: float, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Units per arm to detect a difference `delta` between two means with a two-sided z test."""
    from statistics import NormalDist

    if delta == 0 or not math.isfinite(delta):
        return float("inf")
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return float(2 * (z * sd / delta) ** 2)


def sample_size_one_mean(delta: float, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Units needed for a mean of paired differences (interleaving) to differ from 0 by `delta`."""
    from statistics import NormalDist

    if delta == 0 or not math.isfinite(delta):
        return float("inf")
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return float((z * sd / delta) ** 2)


def bootstrap_columns(values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> list[Estimate]:
    """`bootstrap_ci` of each column of an (n queries, m metrics) matrix with one shared set of
    resamples (fast, and paired across columns). NaN cells are left out of their column's mean."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError("values must be a 2-d (queries, metrics) matrix")
    n, m = v.shape
    if n == 0:
        return [Estimate(float("nan"), float("nan"), float("nan"), 0) for _ in range(m)]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    out = []
    for j in range(m):
        col = v[:, j]
        ok = ~np.isnan(col)
        if not ok.any():
            out.append(Estimate(float("nan"), float("nan"), float("nan"), 0))
            continue
        filled = np.where(ok, col, 0.0)
        sums, counts = filled[idx].sum(1), ok[idx].sum(1)
        boots = sums[counts > 0] / counts[counts > 0]
        lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
        out.append(Estimate(float(col[ok].mean()), float(lo), float(hi), int(ok.sum())))
    return out
