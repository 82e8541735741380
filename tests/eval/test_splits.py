import pandas as pd
import pytest

from eval.data import load_catalog
from eval.splits import leave_last_out, make_splits, purchases, week_split, weekly_splits
from retrieval.catalog import Catalog, Product

D1, D2, D3 = pd.Timestamp("2020-01-01"), pd.Timestamp("2020-01-02"), pd.Timestamp("2020-01-03")


def frame(rows):
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"]).assign(weight=1.0, order=lambda f: range(len(f)))


def test_item_mode_tie_break_by_file_order():
    f = frame([("a", "x", D1), ("a", "z", D2), ("a", "y", D2), ("b", "x", D2), ("b", "y", D1)])
    s = leave_last_out(f, "item")
    # a: day 2 has z then y in the file: y (later in the file) is the last purchase
    assert s.test == {"a": ["y"], "b": ["x"]}
    assert sorted(s.train.loc[s.train.user == "a", "item"]) == ["x", "z"]
    assert s.test_time["a"] == D2


def test_item_mode_tie_break_by_item_id_when_order_equal():
    f = frame([("a", "x", D1), ("a", "q", D2), ("a", "p", D2)]).assign(order=0)
    assert leave_last_out(f, "item").test == {"a": ["q"]}


def test_basket_mode_holds_out_whole_last_day():
    f = frame([("a", "x", D1), ("a", "z", D2), ("a", "y", D2), ("a", "z", D2), ("c", "x", D3)])
    s = leave_last_out(f, "basket")
    assert s.test == {"a": ["z", "y"]}  # distinct, in purchase order
    assert list(s.train.loc[s.train.user == "a", "item"]) == ["x"]
    # c has only one day: no history, not evaluated, but the purchase stays in training
    assert s.skipped_users == 1 and "c" in set(s.train.user)


def test_min_train():
    f = frame([("a", "x", D1), ("a", "y", D2), ("a", "z", D3), ("b", "x", D1)])
    s = leave_last_out(f, "item", min_train=2)
    assert s.test == {"a": ["z"]} and s.skipped_users == 1
    with pytest.raises(ValueError):
        leave_last_out(f, "session")
    with pytest.raises(ValueError):
        make_splits(f, "session")


def test_week_split_trains_up_to_the_cut_and_predicts_the_next_seven_days():
    day = lambda n: D1 + pd.Timedelta(days=n)  # noqa: E731
    f = frame([("a", "x", day(0)), ("a", "y", day(10)), ("a", "z", day(17)), ("a", "w", day(18)),
               ("b", "x", day(11)), ("c", "q", day(2)), ("d", "y", day(12))])
    s = week_split(f, day(10))
    # train = every purchase up to day 10, of every shopper; test = days 11..17 of shoppers with a history
    assert set(s.train["item"]) == {"x", "y", "q"} and s.train["timestamp"].max() == day(10)
    assert s.test == {"a": ["z"]} and s.skipped_users == 2  # b and d bought in the week without a history
    assert s.cut == day(10) and s.summary()["protocol"].startswith("H&M")
    weeks = weekly_splits(f, weeks=2)
    assert [w.cut for w in weeks] == [day(11), day(4)]  # the data ends on day 18
    assert weeks[0].test == {"a": ["z", "w"]} and weeks[0].skipped_users == 1  # d: no purchase up to day 11


def test_purchases_merge_same_day_units():
    f = frame([("a", "x", D1), ("a", "x", D1), ("a", "y", D1), ("a", "x", D2)])
    from retrieval.recommenders import merge_same_day

    m = merge_same_day(f)
    assert len(m) == 3 and m["weight"].tolist() == [2.0, 1.0, 1.0]
    # the leaky item split finds the second unit of x in training; the merged basket split does not leak it
    assert leave_last_out(f.iloc[:3], "item").test == {"a": ["y"]}
    assert leave_last_out(m, "basket").test == {"a": ["x"]} and list(leave_last_out(m, "basket").train["item"]) == ["x", "y"]


def test_purchases_and_load_catalog(tmp_path, synth_catalog):
    synth_catalog.save(tmp_path / "cat")
    c = load_catalog(tmp_path / "cat")
    f = purchases(c, merge=False)
    assert list(f["order"]) == list(range(len(f)))
    assert len(f) == len(synth_catalog.interactions)
    with pytest.raises(FileNotFoundError):
        load_catalog(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError):
        load_catalog(tmp_path / "empty")


def test_load_raw_hm_folder(tmp_path):
    raw = tmp_path / "hm"
    raw.mkdir()
    (raw / "articles.csv").write_text("article_id,product_code,prod_name,product_type_name,colour_group_name,detail_desc\n"
                                      "0100000001,100000,Tee,T-shirt,Black,A tee\n0100000002,100000,Tee,T-shirt,White,A tee\n")
    (raw / "transactions.csv").write_text("t_dat,customer_id,article_id,price,sales_channel_id\n"
                                          "2020-01-01,c1,0100000001,0.01,2\n2020-01-02,c1,0100000002,0.01,2\n")
    c = load_catalog(raw, cache_dir=tmp_path / "cache")
    assert c.ids == ["0100000001", "0100000002"]
    assert leave_last_out(purchases(c)).test == {"c1": ["0100000002"]}


def test_purchases_merges_by_default(tmp_path):
    day = pd.Timestamp("2020-01-01")
    c = Catalog([Product(id="x", title="x"), Product(id="y", title="y")],
                [("a", "x", day, 1.0), ("a", "x", day, 1.0), ("a", "y", day, 1.0)])
    assert len(purchases(c)) == 2 and len(purchases(c, merge=False)) == 3
