"""Purchases indexed for recommenders: per-shopper chronological histories over catalog item rows.

A recommender scores `History` objects (item rows + days, and the shopper id when known), so the
same model answers a known shopper, a history sent with a request (a cart) and an offline split.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

DAY = np.timedelta64(1, "D")
EPOCH = np.datetime64("1970-01-01")


def chronological(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by user, then day, then file order, then item id (the deterministic tie-break)."""
    if "order" not in frame:
        frame = frame.assign(order=range(len(frame)))
    return frame.sort_values(["user", "timestamp", "order", "item"], kind="mergesort").reset_index(drop=True)


def merge_same_day(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, item, day): several units of one item bought on one day are one purchase
    (weight = units), not a re-buy. Keeps the first row's file order."""
    if frame.empty:
        return frame
    if "order" not in frame:
        frame = frame.assign(order=range(len(frame)))
    f = frame.assign(_day=frame["timestamp"].dt.floor("D"))
    agg = {"timestamp": "first", "order": "min"}
    if "weight" in f:
        agg["weight"] = "sum"
    out = f.groupby(["user", "item", "_day"], sort=False, as_index=False).agg(agg)
    return out.drop(columns="_day").sort_values("order", kind="mergesort").reset_index(drop=True)


def to_days(ts) -> np.ndarray:
    """Timestamps as float days since 1970 (the unit every recency window uses)."""
    return ((np.asarray(ts, dtype="datetime64[ns]") - EPOCH) / DAY).astype(np.float64)


@dataclass
class History:
    """One shopper's purchases, oldest first: catalog rows and days; `user` when a trained shopper;
    `when`: the day the recommendation is asked for (None: the day after the training data ends)."""

    items: np.ndarray
    days: np.ndarray
    user: str | None = None
    when: float | None = None
    undated: int = 0  # the last `undated` items were sent with the request (a cart), not bought on `days`

    def __len__(self) -> int:
        return len(self.items)

    @property
    def now(self) -> float | None:
        return float(self.days.max()) if len(self.days) else None


@dataclass
class TrainData:
    """Training purchases indexed for scoring: every row by day, and per-shopper chronological
    histories as CSR arrays (shopper `users[u]` owns rows `offsets[u]:offsets[u + 1]` of
    `hist_item` / `hist_day`), so 1M shoppers cost a few arrays, not 1M small ones."""

    item_ids: list[str]
    index: dict[str, int]
    rows_item: np.ndarray  # every training row, by day
    rows_day: np.ndarray
    rows_user: np.ndarray  # codes into `users`
    users: list[str]
    offsets: np.ndarray  # int64, len(users) + 1
    hist_item: np.ndarray  # int64 item rows, per shopper oldest first
    hist_day: np.ndarray
    user_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.user_index:
            self.user_index = {u: i for i, u in enumerate(self.users)}

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def last_day(self) -> float | None:
        return float(self.rows_day.max()) if len(self.rows_day) else None

    @classmethod
    def build(cls, train: pd.DataFrame, item_ids: Sequence[str], index: dict[str, int] | None = None) -> "TrainData":
        """From a (user, item, timestamp[, order]) frame (an offline split's training rows)."""
        item_ids = list(item_ids)
        index = index if index is not None else {x: i for i, x in enumerate(item_ids)}
        f = chronological(train)
        f = f[f["item"].isin(index)]
        items = f["item"].map(index).to_numpy(np.int64)
        days = to_days(f["timestamp"].to_numpy("datetime64[ns]"))
        codes, users = pd.factorize(f["user"].to_numpy(object), sort=False)  # sorted rows: codes ascend with users
        return cls._from_sorted(item_ids, index, list(users), codes.astype(np.int64), items, days)

    @classmethod
    def from_interactions(cls, inter, item_ids: Sequence[str], index: dict[str, int] | None = None) -> "TrainData":
        """From the catalog's `Interactions` (columns, item codes = catalog rows): no pandas frame
        of string ids, no per-shopper Python objects (what serving 31M purchases needs)."""
        item_ids = list(item_ids)
        index = index if index is not None else {x: i for i, x in enumerate(item_ids)}
        h = inter.histories()
        # shoppers in id order, as `build` has them (models that seed per shopper row then agree)
        by_id = np.argsort(np.asarray(inter.user_ids, object), kind="stable") if len(h) else np.zeros(0, np.int64)
        lengths = h.lengths()[by_id]
        starts = np.zeros(len(by_id) + 1, np.int64)
        np.cumsum(lengths, out=starts[1:])
        gather = np.repeat(h.offsets[:-1][by_id] - starts[:-1], lengths)
        gather += np.arange(starts[-1])
        rows = h.order[gather]
        del gather
        codes = np.repeat(np.arange(len(by_id), dtype=np.int32), lengths)  # int32: 31M rows cost half
        days = to_days(inter.timestamp[rows])
        users = list(inter.user_ids[by_id])
        return cls._from_sorted(item_ids, index, users, codes, inter.item[rows], days)

    @classmethod
    def _from_sorted(cls, item_ids, index, users, codes, items, days) -> "TrainData":
        """Rows sorted by shopper code, then time: CSR histories plus the by-day row arrays."""
        counts = np.bincount(codes, minlength=len(users)) if len(codes) else np.zeros(len(users), np.int64)
        offsets = np.zeros(len(users) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        order = np.argsort(days, kind="stable")
        return cls(item_ids, index, items[order], days[order], codes[order], users, offsets, items, days)

    def history(self, user: str) -> tuple[np.ndarray, np.ndarray]:
        u = self.user_index.get(user)
        if u is None:
            return np.zeros(0, np.int64), np.zeros(0)
        s, e = self.offsets[u], self.offsets[u + 1]
        return self.hist_item[s:e], self.hist_day[s:e]

    def knows(self, user: str) -> bool:
        return user in self.user_index

    def history_of(self, user: str, when: float | None = None) -> History:
        items, days = self.history(user)
        return History(items, days, user if user in self.user_index else None, when)

    def histories(self, users: Sequence[str], when: dict[str, float] | None = None) -> list[History]:
        when = when or {}
        return [self.history_of(u, when.get(u)) for u in users]

    def when(self, h: History) -> float:
        """The prediction day of a history: its own, else the day after the training data ends."""
        if h.when is not None:
            return float(h.when)
        return (self.last_day + 1.0) if self.last_day is not None else 0.0

    def bought_mask(self, users: Sequence[str]) -> sp.csr_matrix:
        """(len(users), n_items) sparse: True where the shopper bought the item in training."""
        return bought_mask(self.histories(users), self.n_items)


def bought_mask(histories: Sequence[History], n_items: int) -> sp.csr_matrix:
    """(histories x items) sparse bool matrix of each history's items (never dense: 1M x 100k)."""
    lengths = np.array([len(h.items) for h in histories], np.int64)
    indptr = np.zeros(len(histories) + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    cols = np.concatenate([np.asarray(h.items, np.int64) for h in histories]) if len(histories) else np.zeros(0, np.int64)
    m = sp.csr_matrix((np.ones(len(cols), bool), cols, indptr), shape=(len(histories), n_items))
    m.sum_duplicates()
    return m


def recency_weights(days: np.ndarray, half_life_days: float | None) -> np.ndarray:
    """Weight of each history purchase: halves every `half_life_days` before the latest one (None: all 1)."""
    if not len(days) or half_life_days is None:
        return np.ones(len(days))
    return 0.5 ** ((days.max() - days) / float(half_life_days))
