"""Columnar interactions: histories, storage in several row groups, same-day merging, and the
streaming H&M transactions reader, each checked against a plain (pandas / statistics) reference."""
from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import retrieval.interactions as I
from retrieval.catalog import Catalog, Product
from retrieval.importers import ImportReport, stream_hm_transactions
from retrieval.interactions import Interactions, InteractionWriter
from retrieval.recommenders.data import TrainData, bought_mask, merge_same_day

ITEMS = np.array([f"i{n}" for n in range(30)], object)


def random_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"user": [f"u{x}" for x in rng.integers(0, 25, n)],
                         "item": ITEMS[rng.integers(0, len(ITEMS), n)],
                         "timestamp": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 40, n), unit="D")
                         + pd.to_timedelta(rng.integers(0, 3, n), unit="h"),
                         "weight": rng.integers(1, 3, n).astype(float)})


def test_histories_follow_time_then_file_order():
    day = pd.Timestamp("2020-01-01")
    rows = [("b", "i3", day + pd.Timedelta(days=2)), ("a", "i1", day + pd.Timedelta(days=1)), ("b", "i2", day),
            ("a", "i0", day + pd.Timedelta(days=1)), ("a", "i5", day)]
    inter = Interactions.from_records(rows, ITEMS)
    assert inter.history("a") == ["i5", "i1", "i0"]  # same day: file order
    assert inter.history("b") == ["i2", "i3"]
    assert inter.history("nobody") == []
    assert inter.last_day("a") == "2020-01-02" and inter.last_day("b") == "2020-01-03" and inter.last_day("x") is None
    assert [inter.user_ids[c] for c in inter.by_activity] == ["a", "b"]
    h = inter.histories()
    assert h is inter.histories()  # built once
    assert h.lengths().tolist() == [2, 3] and len(h) == 2  # codes in order of appearance: b, a


def test_users_ranked_by_purchases_then_id():
    day = pd.Timestamp("2020-01-01")
    rows = [("c", "i1", day), ("b", "i1", day), ("b", "i2", day), ("a", "i3", day), ("a", "i4", day), ("d", "i1", day)]
    inter = Interactions.from_records(rows, ITEMS)
    assert [inter.user_ids[c] for c in inter.by_activity] == ["a", "b", "c", "d"]


def test_parquet_roundtrip_over_several_row_groups(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(I, "ROW_GROUP", 37)  # each row group has its own string dictionaries
    frame = random_frame()
    inter = Interactions.from_frame(frame, ITEMS)
    inter.write(tmp_path / "x.parquet")
    back = Interactions.read(tmp_path / "x.parquet", ITEMS)
    pd.testing.assert_frame_equal(back.frame(), frame.astype({"user": object, "item": object}), check_dtype=False)
    for u in ("u0", "u7", "u24"):
        assert back.history(u) == inter.history(u)
    # items the catalog lacks are dropped on reading
    fewer = ITEMS[:20]
    part = Interactions.read(tmp_path / "x.parquet", fewer)
    assert len(part) == int(frame["item"].isin(set(fewer)).sum())
    assert set(part.frame()["item"]) <= set(fewer)


def test_catalog_keeps_its_interactions_and_reads_them_lazily(tmp_path: Path):
    products = [Product(i, f"title {i}") for i in ITEMS]
    frame = random_frame(50)
    Catalog(products, frame).save(tmp_path)
    c = Catalog.load(tmp_path)
    assert c._interactions is None  # not read until asked for
    assert len(c.interactions) == 50 and c.interactions_frame()["item"].tolist() == frame["item"].tolist()
    assert c.products[3] == products[3] and c["i4"].title == "title i4" and "i5" in c and "zz" not in c
    assert list(c.products[2:4]) == products[2:4]


def test_merging_same_day_matches_the_pandas_rule():
    frame = random_frame(600, seed=3)
    inter = Interactions.from_frame(frame, ITEMS)
    got = inter.merged_same_day().frame()
    want = merge_same_day(frame.assign(order=range(len(frame)))).drop(columns="order")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want[["user", "item", "timestamp", "weight"]].reset_index(drop=True),
                                  check_dtype=False)


def test_train_data_from_columns_equals_the_frame_build():
    frame = random_frame(500, seed=5)
    a = TrainData.build(frame, list(ITEMS))
    b = TrainData.from_interactions(Interactions.from_frame(frame, ITEMS), list(ITEMS))
    assert a.users == b.users
    for u in a.users:
        np.testing.assert_array_equal(a.history(u)[0], b.history(u)[0])
        np.testing.assert_array_equal(a.history(u)[1], b.history(u)[1])
    np.testing.assert_array_equal(a.rows_item, b.rows_item)
    np.testing.assert_array_equal(a.rows_user, b.rows_user)


def test_bought_mask_is_sparse_and_exact():
    frame = random_frame(300, seed=7)
    d = TrainData.build(frame, list(ITEMS))
    m = bought_mask(d.histories(d.users), d.n_items)
    assert m.shape == (len(d.users), len(ITEMS)) and m.nnz < m.shape[0] * m.shape[1]
    for r, u in enumerate(d.users):
        assert set(m[r].indices.tolist()) == set(d.history(u)[0].tolist())


def test_streamed_transactions_give_exact_medians_and_counts(tmp_path: Path):
    rng = np.random.default_rng(1)
    ids = [f"{n:010d}" for n in range(1, 9)]
    lines, paid = ["t_dat,customer_id,article_id,price,sales_channel_id"], {i: [] for i in ids}
    for n in range(3000):
        item = ids[int(rng.integers(len(ids)))]
        price = float(rng.choice([0.01, 0.02, 0.025, 0.03, 0.05]))
        paid[item].append(price)
        lines.append(f"2020-0{1 + n % 9}-1{n % 10},c{int(rng.integers(200))},{int(item)},{price},1")  # id without zeros
    lines += ["2020-01-01,c1,0999999999,0.01,1", "garbage,c1,0000000001,0.01,1", "too,few"]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    report = ImportReport("hm", "x")
    with InteractionWriter(tmp_path / "out.parquet") as w:
        medians = stream_hm_transactions(tmp_path / "t.csv", ids, report, w, block_size=4096)  # many blocks
    assert w.rows == 3000 and report.interactions == 3000
    assert report.interaction_rows_read == 3003
    assert report.problems == {"interaction_unknown_item": 1, "bad_interaction": 1, "interaction_bad_csv_row": 1}
    for i, m in zip(ids, medians):
        assert m == pytest.approx(statistics.median(paid[i])) if paid[i] else np.isnan(m)
    back = Interactions.read(tmp_path / "out.parquet", np.array(ids, object))
    assert len(back) == 3000 and set(back.frame()["item"]) <= set(ids)
