"""Temporal leave-one-out splits of a catalog's purchases, and the validation split inside them.

`item` mode: each shopper's last purchase is the test item; everything before it trains.
Purchases carry only a day, and many shoppers buy several items on one day, so "last" needs a
deterministic tie-break: by day, then by position in the source file, then by item id. The
same-day purchases before the test item stay in training: this is why a "repeat" baseline is so
strong here (a shopper who buys two units of one item has the test item in their history).

`basket` mode: the whole last-day basket (its distinct items) is held out, and training holds
only earlier days: no same-day leakage, several relevant items per shopper.

Shoppers with fewer than `min_train` training purchases are not evaluated (no history to
personalise from); their purchases stay in training, since other shoppers' models learn from them.
Note the usual caveat of per-shopper temporal splits: the global models still see other shoppers'
purchases made after a given shopper's test day.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from retrieval.catalog import Catalog

log = logging.getLogger(__name__)

MODES = ("item", "basket")


@dataclass
class Split:
    """`train`: interaction rows (user, item, timestamp, weight, order); `test`: user -> held-out
    items (distinct, in purchase order); `test_time`: user -> day of the held-out purchase."""

    train: pd.DataFrame
    test: dict[str, list[str]]
    test_time: dict[str, pd.Timestamp] = field(default_factory=dict)
    mode: str = "item"
    skipped_users: int = 0

    @property
    def users(self) -> list[str]:
        return list(self.test)

    def summary(self) -> dict:
        return {"mode": self.mode, "train_rows": len(self.train), "test_users": len(self.test),
                "test_items": sum(len(v) for v in self.test.values()), "skipped_users": self.skipped_users}


def purchases(catalog: Catalog) -> pd.DataFrame:
    """The catalog's interactions as a frame with `order` = position in the source (file order)."""
    frame = catalog.interactions_frame()
    frame["order"] = range(len(frame))
    unknown = ~frame["item"].isin(catalog.by_id)
    if unknown.any():
        log.warning("dropping %d interactions on items not in the catalog", int(unknown.sum()))
        frame = frame[~unknown]
    return frame.reset_index(drop=True)


def chronological(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by user, then day, then file order, then item id (the tie-break)."""
    if "order" not in frame:
        frame = frame.assign(order=range(len(frame)))
    return frame.sort_values(["user", "timestamp", "order", "item"], kind="mergesort").reset_index(drop=True)


def leave_last_out(frame: pd.DataFrame, mode: str = "item", min_train: int = 1) -> Split:
    """Hold out each shopper's last purchase (`item`) or last-day basket (`basket`)."""
    if mode not in MODES:
        raise ValueError(f"split mode must be one of {MODES}, not {mode!r}")
    if frame.empty:
        raise ValueError("no purchases to split")
    f = chronological(frame)
    if mode == "item":
        held = f.groupby("user").cumcount(ascending=False) == 0
    else:
        last_day = f.groupby("user")["timestamp"].transform("max")
        held = f["timestamp"] == last_day
    n_train = (~held).groupby(f["user"]).sum()
    ok_users = set(n_train[n_train >= min_train].index)
    evaluated = held & f["user"].isin(ok_users)
    test: dict[str, list[str]] = {}
    test_time: dict[str, pd.Timestamp] = {}
    for user, item, ts in zip(f.loc[evaluated, "user"], f.loc[evaluated, "item"], f.loc[evaluated, "timestamp"]):
        items = test.setdefault(user, [])
        if item not in items:
            items.append(item)
        test_time[user] = ts
    split = Split(f[~evaluated].reset_index(drop=True), test, test_time, mode, skipped_users=f["user"].nunique() - len(ok_users))
    log.info("split %s", split.summary())
    return split


def validation_split(split: Split, min_train: int = 1) -> Split:
    """The same leave-last-out applied to a split's training rows (to choose weights without the test)."""
    return leave_last_out(split.train, split.mode, min_train)
