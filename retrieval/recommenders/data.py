"""Purchases indexed for recommenders: per-shopper chronological histories over catalog item rows.

A recommender scores `History` objects (item rows + days, and the shopper id when known), so the
same model answers a known shopper, a history sent with a request (a cart) and an offline split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

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
    """Training purchases indexed for scoring: chronological item rows and days per shopper."""

    item_ids: list[str]
    index: dict[str, int]
    rows_item: np.ndarray  # every training row, by day
    rows_day: np.ndarray
    rows_user: np.ndarray  # codes into `users`
    users: list[str]
    hist_items: dict[str, np.ndarray]
    hist_days: dict[str, np.ndarray]

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def last_day(self) -> float | None:
        return float(self.rows_day.max()) if len(self.rows_day) else None

    @classmethod
    def build(cls, train: pd.DataFrame, item_ids: Sequence[str]) -> "TrainData":
        item_ids = list(item_ids)
        index = {x: i for i, x in enumerate(item_ids)}
        f = chronological(train)
        f = f[f["item"].isin(index)]
        items = f["item"].map(index).to_numpy(np.int64)
        days = to_days(f["timestamp"].to_numpy("datetime64[ns]"))
        users = f["user"].to_numpy()
        hist_items: dict[str, np.ndarray] = {}
        hist_days: dict[str, np.ndarray] = {}
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([], int)
        ends = np.r_[starts[1:], len(users)]
        for s, e in zip(starts, ends):
            hist_items[users[s]] = items[s:e]
            hist_days[users[s]] = days[s:e]
        order = np.argsort(days, kind="stable")
        user_codes = pd.Index(list(hist_items)).get_indexer(users) if len(users) else np.zeros(0, np.int64)
        return cls(item_ids, index, items[order], days[order], user_codes[order], list(hist_items), hist_items, hist_days)

    def history(self, user: str) -> tuple[np.ndarray, np.ndarray]:
        return self.hist_items.get(user, np.zeros(0, np.int64)), self.hist_days.get(user, np.zeros(0))

    def history_of(self, user: str, when: float | None = None) -> History:
        items, days = self.history(user)
        return History(items, days, user if user in self.hist_items else None, when)

    def histories(self, users: Sequence[str], when: dict[str, float] | None = None) -> list[History]:
        when = when or {}
        return [self.history_of(u, when.get(u)) for u in users]

    def when(self, h: History) -> float:
        """The prediction day of a history: its own, else the day after the training data ends."""
        if h.when is not None:
            return float(h.when)
        return (self.last_day + 1.0) if self.last_day is not None else 0.0

    def bought_mask(self, users: Sequence[str]) -> np.ndarray:
        """(len(users), n_items) True where the shopper bought the item in training."""
        return bought_mask(self.histories(users), self.n_items)


def bought_mask(histories: Sequence[History], n_items: int) -> np.ndarray:
    mask = np.zeros((len(histories), n_items), bool)
    for r, h in enumerate(histories):
        mask[r, h.items] = True
    return mask


def recency_weights(days: np.ndarray, half_life_days: float | None) -> np.ndarray:
    """Weight of each history purchase: halves every `half_life_days` before the latest one (None: all 1)."""
    if not len(days) or half_life_days is None:
        return np.ones(len(days))
    return 0.5 ** ((days.max() - days) / float(half_life_days))
