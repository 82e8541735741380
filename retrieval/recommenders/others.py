"""Other colours (variants) of the products a shopper bought: the H&M winners' strongest
candidate source after re-buys."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from retrieval.recommenders.data import History, TrainData
from retrieval.recommenders.models import Recommender


class OtherColours(Recommender):
    """Variants of bought products (not the bought items themselves), the most recently bought
    product first, each product's variants by popularity; then popularity."""

    kind = "other_colours"

    def __init__(self, groups: np.ndarray):
        self.groups = np.asarray(groups)
        self.members: dict[int, np.ndarray] = {}
        order = np.argsort(self.groups, kind="stable")
        g = self.groups[order]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        for s, e in zip(starts, np.r_[starts[1:], len(g)]):
            if e - s > 1:
                self.members[int(g[s])] = order[s:e]

    def fit(self, data: TrainData) -> "OtherColours":
        if len(self.groups) != data.n_items:
            raise ValueError(f"{len(self.groups)} item groups for {data.n_items} items")
        self.data = data
        counts = np.bincount(data.rows_item, minlength=data.n_items).astype(np.float32)
        self.pop = counts / (counts.max() + 1)
        return self

    def score_histories(self, histories: Sequence[History]) -> np.ndarray:
        out = np.tile(1e-3 * self.pop, (len(histories), 1))
        for r, h in enumerate(histories):
            n = len(h)
            for pos, item in enumerate(h.items):
                others = self.members.get(int(self.groups[item]))
                if others is not None:
                    out[r, others] = 1.0 + (pos + 1) / n + 0.5 * self.pop[others]
            if n:
                out[r, h.items] = np.minimum(out[r, h.items], 0.5)  # the bought item itself is not "another colour"
        return out
