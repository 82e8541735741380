"""Shopper interactions as columns: one NumPy array per field, shoppers and items as integer codes.

At the full H&M size (31M purchases, 1.3M shoppers) a Python object per purchase costs ~10 GB;
these columns cost ~20 bytes a row. Shopper histories are built once as CSR arrays (`offsets`
into one `items` array, sorted by shopper, then time, then file order) and shared by the
searcher, the served recommender, the `/users` listing and the evaluation.

On disk (`interactions.parquet`) the schema is unchanged: string `user` and `item`, `timestamp`,
`weight`. It is read and written in row groups (pyarrow), so neither side holds a second copy of
the strings.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from retrieval.artifacts import atomic_path

log = logging.getLogger(__name__)

SCHEMA = pa.schema([("user", pa.string()), ("item", pa.string()), ("timestamp", pa.timestamp("ns")), ("weight", pa.float64())])
ROW_GROUP = 1 << 20


@dataclass(frozen=True)
class Histories:
    """Every shopper's interactions, oldest first, as CSR: shopper code `u` owns
    `items[offsets[u]:offsets[u + 1]]`; `order` holds the same rows' positions in the columns
    (for their timestamps and weights)."""

    offsets: np.ndarray  # int64, n_users + 1
    items: np.ndarray  # int32 catalog rows
    order: np.ndarray  # int64 row positions

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def rows(self, user: int) -> np.ndarray:
        """Column positions of one shopper's interactions, oldest first."""
        return self.order[self.offsets[user]:self.offsets[user + 1]]


class Interactions:
    """Columns of (shopper, item, time, weight); `item` codes are rows of `item_ids` (the catalog's ids)."""

    def __init__(self, user_ids: np.ndarray, user: np.ndarray, item: np.ndarray, timestamp: np.ndarray,
                 weight: np.ndarray, item_ids: Sequence[str]):
        n = len(user)
        if not (len(item) == len(timestamp) == len(weight) == n):
            raise ValueError("interaction columns differ in length")
        self.user_ids = np.asarray(user_ids, dtype=object)
        self.user = np.asarray(user, np.int32)
        self.item = np.asarray(item, np.int32)
        self.timestamp = np.asarray(timestamp, "datetime64[ns]")
        self.weight = np.asarray(weight, np.float32)
        self.item_ids = item_ids

    # ----- construction
    @classmethod
    def empty(cls, item_ids: Sequence[str] = ()) -> "Interactions":
        return cls(np.zeros(0, object), np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, "datetime64[ns]"),
                   np.zeros(0, np.float32), item_ids)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, item_ids: Sequence[str], item_index: dict[str, int] | None = None) -> "Interactions":
        """From a (user, item, timestamp[, weight]) frame; rows on items not in `item_ids` are
        dropped with a warning (an item code must be a catalog row)."""
        if frame is None or len(frame) == 0:
            return cls.empty(item_ids)
        items = _codes(frame["item"].astype(str).to_numpy(object), item_ids, item_index)
        keep = items >= 0
        if not keep.all():
            log.warning("dropping %d interactions on items not in the catalog", int((~keep).sum()))
        users, user_ids = pd.factorize(frame["user"].astype(str).to_numpy(object)[keep], sort=False)
        ts = pd.to_datetime(frame["timestamp"]).to_numpy("datetime64[ns]")[keep]
        weight = frame["weight"].to_numpy(np.float32)[keep] if "weight" in frame else np.ones(int(keep.sum()), np.float32)
        return cls(np.asarray(user_ids, object), users, items[keep], ts, weight, item_ids)

    @classmethod
    def from_records(cls, records: Iterable[tuple], item_ids: Sequence[str]) -> "Interactions":
        """From (user, item, timestamp[, weight]) tuples (small data: tests, importers of small formats)."""
        rows = [tuple(r) + (1.0,) * (4 - len(r)) for r in records]
        if not rows:
            return cls.empty(item_ids)
        return cls.from_frame(pd.DataFrame(rows, columns=["user", "item", "timestamp", "weight"]), item_ids)

    @classmethod
    def read(cls, path: str | Path, item_ids: Sequence[str], item_index: dict[str, int] | None = None) -> "Interactions":
        """Read `interactions.parquet` one row group at a time: the user and item strings are read
        dictionary-encoded, so only their distinct values become Python strings."""
        pf = pq.ParquetFile(path, read_dictionary=["user", "item"])
        user_codes: dict[str, int] = {}
        cols: dict[str, list[np.ndarray]] = {"user": [], "item": [], "timestamp": [], "weight": []}
        dropped = 0
        for g in range(pf.num_row_groups):
            t = pf.read_row_group(g, columns=["user", "item", "timestamp", "weight"])
            u = _dictionary(t.column("user"))
            i = _dictionary(t.column("item"))
            ucode = np.fromiter((user_codes.setdefault(x, len(user_codes)) for x in u.dictionary.to_pylist()), np.int64,
                                count=len(u.dictionary))
            icode = _codes(np.asarray(i.dictionary.to_pylist(), object), item_ids, item_index)
            items = icode[i.indices.to_numpy(zero_copy_only=False)] if len(icode) else np.zeros(len(t), np.int64)
            keep = items >= 0
            dropped += int((~keep).sum())
            cols["user"].append(ucode[u.indices.to_numpy(zero_copy_only=False)][keep].astype(np.int32))
            cols["item"].append(items[keep].astype(np.int32))
            ts = t.column("timestamp").cast(pa.timestamp("ns")).to_numpy()
            cols["timestamp"].append(ts[keep])
            cols["weight"].append(t.column("weight").to_numpy().astype(np.float32)[keep])
            del t, u, i
        if dropped:
            log.warning("dropping %d interactions on items not in the catalog", dropped)
        if not cols["user"]:
            return cls.empty(item_ids)
        user_ids = np.empty(len(user_codes), object)
        user_ids[:] = list(user_codes)
        return cls(user_ids, *(np.concatenate(cols[c]) for c in ("user", "item", "timestamp", "weight")), item_ids)

    def write(self, path: str | Path) -> Path:
        """Write the Parquet file atomically (`retrieval.artifacts`), one row group at a time."""
        with atomic_path(path) as tmp, InteractionWriter(tmp) as w:
            for s in range(0, len(self), ROW_GROUP):
                e = s + ROW_GROUP
                w.write(self.user_ids[self.user[s:e]], _take(self.item_ids, self.item[s:e]), self.timestamp[s:e], self.weight[s:e])
        return Path(path)

    def recode(self, item_ids: Sequence[str], item_index: dict[str, int] | None = None) -> "Interactions":
        """The same interactions coded against another item list (rows on items it lacks dropped)."""
        if len(self.item_ids) == len(item_ids) and all(a == b for a, b in zip(self.item_ids, item_ids)):
            return Interactions(self.user_ids, self.user, self.item, self.timestamp, self.weight, item_ids)
        new = _codes(np.asarray(list(self.item_ids), object), item_ids, item_index)
        rows = new[self.item] if len(self) else np.zeros(0, np.int64)
        keep = rows >= 0
        if not keep.all():
            log.warning("dropping %d interactions on items not in the catalog", int((~keep).sum()))
        return Interactions(self.user_ids, self.user[keep], rows[keep], self.timestamp[keep], self.weight[keep], item_ids)

    # ----- views
    def __len__(self) -> int:
        return len(self.user)

    def __bool__(self) -> bool:
        return len(self.user) > 0

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def frame(self) -> pd.DataFrame:
        """(user, item, timestamp, weight) with string ids, in stored order."""
        return pd.DataFrame({"user": self.user_ids[self.user] if len(self) else np.zeros(0, object),
                             "item": _take(self.item_ids, self.item),
                             "timestamp": pd.to_datetime(self.timestamp),
                             "weight": self.weight.astype(np.float64)})

    @cached_property
    def user_index(self) -> pd.Index:
        return pd.Index(self.user_ids)

    def code(self, user_id: str) -> int | None:
        """A shopper's code, or None for an unknown shopper."""
        try:
            c = self.user_index.get_loc(user_id)
        except KeyError:
            return None
        return int(c) if isinstance(c, (int, np.integer)) else None

    def __contains__(self, user_id: object) -> bool:
        return self.code(user_id) is not None  # type: ignore[arg-type]

    def histories(self) -> Histories:
        """CSR histories, built once (sorted by shopper, time, then file order: a stable sort)."""
        return self._histories

    @cached_property
    def _histories(self) -> Histories:
        order = np.lexsort((self.timestamp, self.user))  # lexsort is stable: file order breaks ties
        counts = np.bincount(self.user, minlength=self.n_users)
        offsets = np.zeros(self.n_users + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        return Histories(offsets, self.item[order], order)

    def history_items(self, user_id: str) -> np.ndarray:
        """A shopper's item rows, oldest first (empty for an unknown shopper)."""
        c = self.code(user_id)
        if c is None:
            return np.zeros(0, np.int32)
        h = self.histories()
        return h.items[h.offsets[c]:h.offsets[c + 1]]

    def history(self, user_id: str) -> list[str]:
        """A shopper's item ids, oldest first (empty for an unknown shopper)."""
        return list(_take(self.item_ids, self.history_items(user_id)))

    @cached_property
    def last_days(self) -> np.ndarray:
        """Per shopper code, the day of their latest interaction (datetime64[D]; NaT when none):
        the last row of each time-sorted history."""
        h = self.histories()
        out = np.full(self.n_users, np.datetime64("NaT"), "datetime64[ns]")
        has = h.lengths() > 0
        out[has] = self.timestamp[h.order[h.offsets[1:][has] - 1]]
        return out.astype("datetime64[D]")

    def last_day(self, user_id: str) -> str | None:
        """The date of a shopper's latest interaction, YYYY-MM-DD (None: unknown or undated)."""
        c = self.code(user_id)
        if c is None or np.isnat(self.last_days[c]):
            return None
        return str(self.last_days[c])

    @cached_property
    def by_activity(self) -> np.ndarray:
        """Shopper codes, most interactions first, ties by id (computed once, for `/users`)."""
        return np.lexsort((id_ranks(self.user_ids), -self.counts))

    @cached_property
    def counts(self) -> np.ndarray:
        """Interactions per shopper code."""
        return self.histories().lengths()

    def merged_same_day(self) -> "Interactions":
        """One row per (shopper, item, day) - several units of an item on one day are one purchase
        (weight = their sum), at the first row's time and file position (see `recommenders.data`)."""
        if not len(self):
            return self
        day = self.timestamp.astype("datetime64[D]").astype(np.int64)
        day -= day.min()
        spans = (float(self.n_users), float(max(len(self.item_ids), 1)), float(day.max() + 1))
        if spans[0] * spans[1] * spans[2] < 2**62:  # one int64 key, built in place
            flat = self.user.astype(np.int64)
            flat *= int(spans[1])
            flat += self.item
            flat *= int(spans[2])
            flat += day
            del day
            _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
            del flat
        else:  # too many codes for one int64 key
            key = np.stack([self.user.astype(np.int64), self.item.astype(np.int64), day], 1)
            _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        weight = np.bincount(inverse, weights=self.weight, minlength=len(first)).astype(np.float32)
        keep = np.argsort(first, kind="stable")  # file order of each group's first row
        rows = first[keep]
        return Interactions(self.user_ids, self.user[rows], self.item[rows], self.timestamp[rows], weight[keep], self.item_ids)


class InteractionWriter:
    """Appends interaction batches (string user and item ids) to a Parquet file: bounded memory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows = 0
        self._w = pq.ParquetWriter(str(path), SCHEMA, compression="zstd")

    def write(self, users, items, timestamps, weights) -> None:
        t = pa.table({"user": pa.array(users, pa.string()), "item": pa.array(items, pa.string()),
                      "timestamp": pa.array(np.asarray(timestamps, "datetime64[ns]"), pa.timestamp("ns")),
                      "weight": pa.array(np.asarray(weights, np.float64), pa.float64())}, schema=SCHEMA)
        self.write_table(t)

    def write_table(self, t: pa.Table) -> None:
        if len(t):
            self._w.write_table(t.cast(SCHEMA), row_group_size=ROW_GROUP)
            self.rows += len(t)

    def close(self) -> None:
        self._w.close()

    def __enter__(self) -> "InteractionWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def id_ranks(ids: np.ndarray) -> np.ndarray:
    """Each id's position in id order (an object-array sort: no fixed-width copy of 1M strings)."""
    ranks = np.empty(len(ids), np.int64)
    ranks[np.argsort(np.asarray(ids, object), kind="stable")] = np.arange(len(ids))
    return ranks


def _dictionary(col: pa.ChunkedArray) -> pa.DictionaryArray:
    """One dictionary array for a column chunk list (unified dictionary)."""
    if not pa.types.is_dictionary(col.type):
        col = pa.chunked_array([c.dictionary_encode() for c in col.chunks], pa.dictionary(pa.int32(), col.type))
    col = col.unify_dictionaries()
    if col.num_chunks == 0:
        return pa.DictionaryArray.from_arrays(pa.array([], pa.int32()), pa.array([], pa.string()))
    return col.combine_chunks() if col.num_chunks > 1 else col.chunk(0)


def _codes(values: np.ndarray, item_ids: Sequence[str], item_index: dict[str, int] | None) -> np.ndarray:
    """Catalog rows of item id strings (-1: not in the catalog)."""
    if item_index is not None:
        return np.fromiter((item_index.get(v, -1) for v in values), np.int64, count=len(values))
    return pd.Index(list(item_ids)).get_indexer(values).astype(np.int64)


def _take(item_ids: Sequence[str], rows: np.ndarray) -> np.ndarray:
    if isinstance(item_ids, np.ndarray):
        return item_ids[rows]
    return np.asarray([item_ids[int(r)] for r in rows], dtype=object)
