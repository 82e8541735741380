"""Offline splits of a catalog's purchases. Every number `whyrec eval rec` prints names its split.

Purchases carry only a day, and one purchase line per unit: a shopper who buys two units of a
top has two lines on one day. First, same-day lines of one item are merged into one purchase
(`merge_same_day`), so a second unit is never taken for a re-buy.

`basket` (leak-free, the headline): each shopper's whole last-day basket (its distinct items) is
held out, and training holds only earlier days. Caveat of every per-shopper split: the global
models still see other shoppers' purchases made after a given shopper's test day.
`week` (the H&M competition's protocol, no leak at all): train on every purchase up to day T,
predict each shopper's purchases in the next 7 days; evaluated for `weeks` consecutive cut days
(T, T-7, ...), pooled as shopper-weeks, each week with its own training cut.
`item` (kept for comparison; it leaks): the last purchase line is the test item (tie-break: day,
file order, item id); same-day purchases before it stay in training, so a "repeat" model finds
the test item in the history when the basket holds it.

Shoppers with fewer than `min_train` training purchases are not evaluated; their purchases stay
in training, since other shoppers' models learn from them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from retrieval.catalog import Catalog
from retrieval.recommenders.data import chronological

log = logging.getLogger(__name__)

MODES = ("basket", "week", "item")
PROTOCOL = {
    "basket": "leak-free: each shopper's last-day basket held out, same-day lines merged, training = earlier days",
    "week": "H&M competition: train up to day T, predict the next 7 days' purchases (pooled over weekly cuts)",
    "item": "LEAKY (comparison only): last purchase line held out, same-day lines of that basket stay in training",
}


@dataclass
class Split:
    """`train`: interaction rows (user, item, timestamp, weight, order); `test`: user -> held-out
    items (distinct, in purchase order); `test_time`: user -> day of the held-out purchase."""

    train: pd.DataFrame
    test: dict[str, list[str]]
    test_time: dict[str, pd.Timestamp] = field(default_factory=dict)
    mode: str = "basket"
    skipped_users: int = 0
    name: str = ""
    cut: pd.Timestamp | None = None  # week protocol: the last training day (predictions are for the days after it)

    @property
    def users(self) -> list[str]:
        return list(self.test)

    def summary(self) -> dict:
        return {"mode": self.mode, "name": self.name or self.mode, "protocol": PROTOCOL[self.mode], "train_rows": len(self.train),
                "test_users": len(self.test), "test_items": sum(len(v) for v in self.test.values()),
                "skipped_users": self.skipped_users}


def purchases(catalog: Catalog, merge: bool = True) -> pd.DataFrame:
    """The catalog's interactions with `order` = position in the source; same-day lines merged
    (the frame the served recommender is fitted on)."""
    from retrieval.recommenders.serve import purchases_frame

    return purchases_frame(catalog, merge)


def _collect(f: pd.DataFrame, evaluated: pd.Series) -> tuple[dict[str, list[str]], dict[str, pd.Timestamp]]:
    test: dict[str, list[str]] = {}
    test_time: dict[str, pd.Timestamp] = {}
    for user, item, ts in zip(f.loc[evaluated, "user"], f.loc[evaluated, "item"], f.loc[evaluated, "timestamp"]):
        items = test.setdefault(user, [])
        if item not in items:
            items.append(item)
        test_time[user] = ts
    return test, test_time


def leave_last_out(frame: pd.DataFrame, mode: str = "basket", min_train: int = 1) -> Split:
    """Hold out each shopper's last purchase line (`item`) or last-day basket (`basket`)."""
    if mode not in ("item", "basket"):
        raise ValueError(f"leave-last-out mode must be item or basket, not {mode!r}")
    if frame.empty:
        raise ValueError("no purchases to split")
    f = chronological(frame)
    if mode == "item":
        held = f.groupby("user").cumcount(ascending=False) == 0
    else:
        held = f["timestamp"] == f.groupby("user")["timestamp"].transform("max")
    n_train = (~held).groupby(f["user"]).sum()
    ok_users = set(n_train[n_train >= min_train].index)
    evaluated = held & f["user"].isin(ok_users)
    test, test_time = _collect(f, evaluated)
    split = Split(f[~evaluated].reset_index(drop=True), test, test_time, mode,
                  skipped_users=f["user"].nunique() - len(ok_users), name=mode)
    log.info("split %s", split.summary())
    return split


def week_split(frame: pd.DataFrame, cut: pd.Timestamp, days: int = 7, min_train: int = 1) -> Split:
    """Train on purchases up to and including day `cut`; test = each shopper's purchases in the next `days` days."""
    if frame.empty:
        raise ValueError("no purchases to split")
    f = chronological(frame)
    train = f[f["timestamp"] <= cut]
    in_week = (f["timestamp"] > cut) & (f["timestamp"] <= cut + pd.Timedelta(days=days))
    n_train = train.groupby("user").size()
    ok_users = set(n_train[n_train >= min_train].index)
    week_users = set(f.loc[in_week, "user"])
    test, test_time = _collect(f, in_week & f["user"].isin(ok_users))
    split = Split(train.reset_index(drop=True), test, test_time, "week", skipped_users=len(week_users - ok_users),
                  name=f"week after {cut.date()}", cut=cut)
    log.info("split %s", split.summary())
    return split


def weekly_splits(frame: pd.DataFrame, weeks: int = 4, days: int = 7, min_train: int = 1) -> list[Split]:
    """`weeks` consecutive competition-style splits ending at the data's last day, latest first."""
    if weeks < 1:
        raise ValueError("weeks must be >= 1")
    end = frame["timestamp"].max().floor("D")
    return [week_split(frame, end - pd.Timedelta(days=days * (w + 1)), days, min_train) for w in range(weeks)]


def make_splits(frame: pd.DataFrame, mode: str, min_train: int = 1, weeks: int = 4) -> list[Split]:
    if mode not in MODES:
        raise ValueError(f"split mode must be one of {MODES}, not {mode!r}")
    return weekly_splits(frame, weeks, min_train=min_train) if mode == "week" else [leave_last_out(frame, mode, min_train)]
