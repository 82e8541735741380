"""The learned ranker: candidates from several recommenders, scored by LightGBM LambdaRank.

The recipe of the H&M competition's winners (and the early-fusion reranker of the multimodal
notes): each source model proposes its top items for a history; every (history, candidate) pair
gets features (which sources proposed it and at what rank, recency and counts, price against the
shopper's usual, text/vector similarity to the history, category and colour shares of the
history); gradient-boosted trees rank them.

Training data comes from earlier time windows of the training purchases: each shopper's last
purchase day is held out as labels, the sources are fitted on what came before, and this is
repeated `windows` times further back. Nothing from the period being predicted is ever seen.
Items no source proposes rank below every candidate, by popularity.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from retrieval.recommenders.context import ModelContext
from retrieval.recommenders.data import History, TrainData
from retrieval.recommenders.models import Recommender

log = logging.getLogger(__name__)

MISSING_RANK = 1000.0
NOT_CANDIDATE = -1000.0
BATCH_BYTES = 1 << 30


@dataclass
class RankerParams:
    """LightGBM settings (the `lgbm:` entry of a ranker spec)."""

    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 20
    subsample: float = 0.8
    subsample_freq: int = 1
    colsample_bytree: float = 0.8
    seed: int = 0
    threads: int = 1


def _last_day_holdout(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, set[int]], dict[str, float]]:
    """Frame without each shopper's last day; those days' items (labels) and the day, per shopper with history left."""
    last = frame.groupby("user")["day"].transform("max")
    held = frame["day"] == last
    rest = frame[~held]
    has_history = set(rest["user"])
    labels: dict[str, set[int]] = {}
    when: dict[str, float] = {}
    for u, i, d in zip(frame.loc[held, "user"], frame.loc[held, "item"], frame.loc[held, "day"]):
        if u in has_history:
            labels.setdefault(u, set()).add(int(i))
            when[u] = float(d)
    return rest, labels, when


def _train_data(data: TrainData, frame: pd.DataFrame) -> TrainData:
    f = pd.DataFrame({"user": frame["user"].to_numpy(), "item": [data.item_ids[i] for i in frame["item"]],
                      "timestamp": pd.to_datetime(frame["day"].to_numpy(), unit="D"), "order": frame["order"].to_numpy()})
    return TrainData.build(f, data.item_ids)


def _frame(data: TrainData) -> pd.DataFrame:
    users, items, days, order = [], [], [], []
    n = 0
    for u in data.users:
        it, d = data.history(u)
        users += [u] * len(it)
        items.append(it)
        days.append(d)
        order.append(np.arange(n, n + len(it)))
        n += len(it)
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
    return pd.DataFrame({"user": users, "item": cat(items, np.int64), "day": cat(days, np.float64), "order": cat(order, np.int64)})


class Ranker(Recommender):
    """Candidates from `sources` (name -> how many each proposes), LambdaRank over their features."""

    kind = "ranker"

    def __init__(self, ctx: ModelContext, sources: dict[str, Recommender], candidates: dict[str, int],
                 windows: int = 2, max_train_users: int | None = 2000, params: RankerParams | None = None,
                 batch: int = 256, seed: int = 0):
        unknown = set(candidates) - set(sources)
        if unknown:
            raise ValueError(f"ranker candidates name unknown sources {sorted(unknown)}")
        if windows < 1:
            raise ValueError("ranker windows must be >= 1")
        self.ctx, self.sources, self.n_cand = ctx, sources, dict(candidates)
        self.windows, self.max_train_users, self.batch, self.seed = windows, max_train_users, batch, seed
        self.params = params or RankerParams()
        self.model = None
        self.booster = None  # the fitted LightGBM booster (also what a saved fit restores)
        self.info: dict = {}

    # ------------------------------------------------------------------ data-dependent tables
    def _prepare(self, data: TrainData, states: dict | None = None) -> None:
        self.data = data
        for name, m in self.sources.items():
            if states is None:
                m.fit(data)
            else:
                m.restore(data, states.get(name))
        self.counts = np.bincount(data.rows_item, minlength=data.n_items).astype(np.float64)
        first = np.full(data.n_items, np.nan)
        if len(data.rows_item):
            # rows are by day: the first occurrence of each item is its first sale
            uniq, pos = np.unique(data.rows_item, return_index=True)
            first[uniq] = data.rows_day[pos]
        self.first_sale = first
        self.fallback = (NOT_CANDIDATE + self.counts / (self.counts.max() + 1)).astype(np.float32) if len(self.counts) else None
        self._window_cache: dict[tuple[float, float], np.ndarray] = {}

    def _window_counts(self, now: float, days: float) -> np.ndarray:
        key = (now, days)
        if key not in self._window_cache:
            lo, hi = np.searchsorted(self.data.rows_day, [now - days, now], side="left")  # the day `now` excluded
            self._window_cache[key] = np.bincount(self.data.rows_item[lo:hi], minlength=self.data.n_items).astype(np.float32)
        return self._window_cache[key]

    # ------------------------------------------------------------------ candidates and features
    @staticmethod
    def _top(row: np.ndarray, n: int) -> np.ndarray:
        """The n best item rows of a score row, best first."""
        n = min(n, len(row))
        top = np.argpartition(-row, n - 1)[:n] if n < len(row) else np.arange(len(row))
        return top[np.argsort(-row[top], kind="stable")]

    def candidates(self, histories: Sequence[History]) -> list[dict[str, np.ndarray]]:
        """Per history: source name -> its top item rows, best first."""
        out: list[dict[str, np.ndarray]] = [dict() for _ in histories]
        for name, n in self.n_cand.items():
            S = self.sources[name].score_histories(histories)
            for r in range(len(histories)):
                out[r][name] = self._top(S[r], n)
        return out

    def _features(self, histories: Sequence[History]) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
        """(candidate rows per history, feature matrix per history, feature names)."""
        ctx, data = self.ctx, self.data
        names = [n for n in self.n_cand]
        S = {n: self.sources[n].score_histories(histories) for n in names}
        rows_out, feats_out = [], []
        fnames: list[str] = []
        for r, h in enumerate(histories):
            per_src = {n: self._top(S[n][r], self.n_cand[n]) for n in names}
            cand = np.unique(np.concatenate(list(per_src.values()))) if per_src else np.zeros(0, np.int64)
            cols: dict[str, np.ndarray] = {}
            for n in names:
                rank = np.full(len(cand), MISSING_RANK)
                pos = np.searchsorted(cand, per_src[n])
                rank[pos] = np.arange(1, len(per_src[n]) + 1)
                cols[f"{n}_rank"] = rank
                row = S[n][r]
                sd = row.std()
                cols[f"{n}_z"] = (row[cand] - row.mean()) / (sd if sd > 0 else 1.0)
            cols["n_sources"] = (np.stack([cols[f"{n}_rank"] for n in names]) < MISSING_RANK).sum(0).astype(float) if names else np.zeros(len(cand))
            when = data.when(h)  # the day the recommendation is for
            now = h.now if h.now is not None else when
            hi, hd = h.items, h.days
            # the shopper's own purchases of the item and of its product (other colours)
            bought = np.zeros(data.n_items)
            np.add.at(bought, hi, 1.0)
            last_b = np.full(data.n_items, np.nan)
            last_b[hi] = hd  # chronological: the last write is the latest purchase
            cols["bought_n"] = bought[cand]
            cols["bought_days_ago"] = now - last_b[cand]
            g = ctx.groups
            if g is not None and len(hi):
                gh = g[hi]
                same_g = g[cand][:, None] == gh[None, :]
                cols["group_n"] = same_g.sum(1).astype(float)
                cols["group_days_ago"] = np.where(same_g.any(1), now - np.where(same_g, hd[None, :], -np.inf).max(1), np.nan)
            else:
                cols["group_n"] = np.zeros(len(cand))
                cols["group_days_ago"] = np.full(len(cand), np.nan)
            # popularity: all time, and in windows before the prediction day and before the shopper's last purchase
            cols["pop_all"] = self.counts[cand]
            for d in (7, 28):
                cols[f"pop_{d}d"] = self._window_counts(when, d)[cand]
                cols[f"pop_{d}d_at_last_purchase"] = self._window_counts(now + 1.0, d)[cand]
            cols["item_age_days"] = when - self.first_sale[cand]
            cols["user_idle_days"] = np.full(len(cand), when - now)
            cols["hist_len"] = np.full(len(cand), float(len(hi)))
            cols["hist_distinct"] = np.full(len(cand), float(len(np.unique(hi))))
            # price against the shopper's usual
            if ctx.prices is not None:
                hp = ctx.prices[hi]
                usual = np.nanmedian(hp) if np.isfinite(hp).any() else np.nan
                cp = ctx.prices[cand]
                cols["price"] = cp
                cols["price_vs_usual"] = np.log(cp / usual) if np.isfinite(usual) and usual > 0 else np.full(len(cand), np.nan)
            # category and colour shares in the history
            for key, codes in (("category", ctx.category), ("category_top", ctx.category_top), ("colour", ctx.colour)):
                if codes is None or not len(hi):
                    cols[f"{key}_share"] = np.zeros(len(cand))
                    continue
                share = np.bincount(codes[hi], minlength=codes.max() + 1) / len(hi)
                cols[f"{key}_share"] = share[codes[cand]]
            # similarity to the history: text (tf-idf), item vectors, photos
            uniq = np.unique(hi)
            for key, sim in (("text", self._text_sim), ("vector", self._vec_sim(ctx.item_vectors)),
                             ("image", self._vec_sim(ctx.image_vectors))):
                if sim is None or not len(uniq):
                    cols[f"{key}_sim_max"] = np.full(len(cand), np.nan)
                    cols[f"{key}_sim_mean"] = np.full(len(cand), np.nan)
                    continue
                M = sim(cand, uniq)
                cols[f"{key}_sim_max"] = M.max(1)
                cols[f"{key}_sim_mean"] = M.mean(1)
            if not fnames:
                fnames = list(cols)
            rows_out.append(cand)
            feats_out.append(np.column_stack([cols[f] for f in fnames]).astype(np.float32) if len(cand) else np.zeros((0, len(fnames)), np.float32))
        return rows_out, feats_out, fnames

    def _text_sim(self, cand: np.ndarray, hist: np.ndarray) -> np.ndarray:
        X = self._tfidf
        return (X[cand] @ X[hist].T).toarray()

    @staticmethod
    def _vec_sim(V: np.ndarray | None) -> Callable | None:
        if V is None:
            return None
        return lambda cand, hist: V[cand] @ V[hist].T

    def _batched_features(self, histories: Sequence[History], desc: str):
        rows, feats, names = [], [], []
        # each source scores a (batch x items) float32 matrix: bound them to ~BATCH_BYTES together (1M items: ~30 histories)
        batch = max(1, min(self.batch, BATCH_BYTES // max(1, 4 * self.data.n_items * max(1, len(self.n_cand)))))
        for s in tqdm(range(0, len(histories), batch), desc=desc, unit="batch", disable=len(histories) <= batch):
            r, f, names = self._features(histories[s : s + batch])
            rows += r
            feats += f
        return rows, feats, names

    # ------------------------------------------------------------------ fit / score
    def fit(self, data: TrainData) -> "Ranker":
        import lightgbm as lgb

        t0 = time.time()
        self._tfidf = self.ctx.text_tfidf()
        rng = np.random.default_rng(self.seed)
        frame = _frame(data)
        X_parts, y_parts, groups = [], [], []
        recall: dict[str, list[float]] = {n: [] for n in self.n_cand}
        recall["all"] = []
        fnames: list[str] = []
        for w in range(self.windows):
            frame, labels, when = _last_day_holdout(frame)
            if not labels:
                break
            users = sorted(labels)
            if self.max_train_users and len(users) > self.max_train_users:
                users = sorted(rng.choice(users, self.max_train_users, replace=False).tolist())
            wdata = _train_data(data, frame)
            self._prepare(wdata)
            hists = wdata.histories(users, when)
            rows, feats, fnames = self._batched_features(hists, f"ranker window {w + 1}")
            for u, cand, F in zip(users, rows, feats):
                pos = labels[u]
                y = np.fromiter((c in pos for c in cand), bool, len(cand))
                recall["all"].append(y.sum() / len(pos))
                if y.any() and not y.all():
                    X_parts.append(F)
                    y_parts.append(y.astype(np.int32))
                    groups.append(len(cand))
            log.info("ranker window %d: %d shoppers, %d with a positive candidate", w + 1, len(users), len(groups))
        if not groups:
            raise ValueError("ranker: no training window has a held-out purchase among the candidates (too few purchases)")
        p = self.params
        self.model = lgb.LGBMRanker(objective="lambdarank", n_estimators=p.n_estimators, learning_rate=p.learning_rate,
                                    num_leaves=p.num_leaves, min_child_samples=p.min_child_samples, subsample=p.subsample,
                                    subsample_freq=p.subsample_freq, colsample_bytree=p.colsample_bytree, random_state=p.seed,
                                    n_jobs=p.threads, verbose=-1)
        t_fit = time.time()
        self.model.fit(np.concatenate(X_parts), np.concatenate(y_parts), group=groups, feature_name=fnames)
        self.booster = self.model.booster_
        self.feature_names = fnames
        gain = self.model.booster_.feature_importance("gain")
        self.info = {"train_groups": len(groups), "train_rows": int(sum(groups)),
                     "window_candidate_recall": float(np.mean(recall["all"])) if recall["all"] else None,
                     "lgbm_fit_s": round(time.time() - t_fit, 2),
                     "feature_importance_gain": {n: round(float(v), 1) for n, v in sorted(zip(fnames, gain), key=lambda x: -x[1])}}
        self._prepare(data)  # the sources, refitted on every training purchase, propose for scoring
        self.info["fit_s"] = round(time.time() - t0, 2)
        log.info("ranker trained on %d groups (%d rows) in %.1fs", len(groups), sum(groups), self.info["fit_s"])
        return self

    def fitted_state(self) -> dict:
        """The booster, the ranker's own TF-IDF matrix and its sources' saved fits (the training
        windows are the expensive part: at 1M items they score thousands of histories per source)."""
        if self.booster is None:
            raise ValueError("the ranker is not fitted")
        return {"booster": self.booster.model_to_string(), "feature_names": list(self.feature_names), "info": dict(self.info),
                "tfidf": self._tfidf, "sources": {n: m.fitted_state() for n, m in self.sources.items()}}

    def restore(self, data: TrainData, state: dict | None) -> "Ranker":
        if state is None:
            return self.fit(data)
        import lightgbm as lgb

        self._tfidf = self.ctx.text_tfidf_matrix = state["tfidf"].tocsr()
        self.booster = lgb.Booster(model_str=state["booster"])
        self.feature_names, self.info = list(state["feature_names"]), dict(state["info"])
        if self.booster.feature_name() != self.feature_names:
            raise ValueError("the saved ranker's features are not this code's; refit it")
        self._prepare(data, state.get("sources", {}))
        return self

    def score_histories(self, histories: Sequence[History]) -> np.ndarray:
        if self.booster is None:
            raise ValueError("the ranker is not fitted")
        out = np.tile(self.fallback, (len(histories), 1))
        rows, feats, _ = self._batched_features(list(histories), "ranker scoring")
        for r, (cand, F) in enumerate(zip(rows, feats)):
            if len(cand):
                out[r, cand] = self.booster.predict(F)
        return out
