import numpy as np
import pandas as pd
import pytest

from eval import metrics as M
from eval.recommenders import (BPR, Content, Hybrid, ModelContext, Popularity, Repeat, TfidfKNN, TrainData, blend,
                               create_recommender, select_weights, simplex_grid, standardise, user_ndcg)
from eval.splits import leave_last_out, purchases

T = pd.Timestamp("2020-01-01")
ITEMS = ["i0", "i1", "i2", "i3", "i4"]


def train(rows):
    return pd.DataFrame([(u, i, T + pd.Timedelta(days=d)) for u, i, d in rows], columns=["user", "item", "timestamp"]).assign(
        weight=1.0, order=lambda f: range(len(f)))


ROWS = [("a", "i1", 0), ("a", "i2", 5), ("a", "i1", 1), ("b", "i3", 0), ("b", "i3", 30), ("c", "i3", 31), ("c", "i4", 31)]


def test_popularity_global_and_window():
    d = TrainData.build(train(ROWS), ITEMS)
    s = Popularity().fit(d).score(["a", "zz"])
    assert (s[0] == s[1]).all()
    assert list(np.argsort(-s[0], kind="stable")[:3]) == [3, 1, 2]  # i3 x3, i1 x2, then i2/i4 x1
    # a's last purchase is day 5: a 10-day window sees only days (-5, 5]: i1 x2, i2 x1, i3 x1;
    # ties in the window are ordered by all-time counts (i3 x3 before i2 x1)
    w = Popularity(window_days=10).fit(d).score(["a", "c"])
    assert list(np.argsort(-w[0])) == [1, 3, 2, 4, 0]
    # c's window (day 31) sees i3 on day 30 and 31 and i4 on day 31
    assert w[1, 3] > w[1, 4] > w[1, 1]


def test_repeat_history_first_by_recency():
    d = TrainData.build(train(ROWS), ITEMS)
    s = Repeat().fit(d).score(["a"])[0]
    # a bought i1 (day 0), i1 (day 1), i2 (day 5): i2 then i1, then the rest by popularity (i3 first)
    assert list(np.argsort(-s)) == [2, 1, 3, 4, 0]
    assert s[3] < 1e-3 < 2 <= s[1]  # the popularity part only orders the rest


def test_tfidf_similar_text_ranks_first():
    texts = ["red wool scarf", "blue denim jeans", "red wool hat", "green cotton shirt", "blue denim jacket"]
    d = TrainData.build(train([("a", "i1", 0)]), ITEMS)
    s = TfidfKNN(texts, min_df=1, neighbours=None).fit(d).score(["a", "nobody"])
    assert list(np.argsort(-s[0])[:2]) == [1, 4]
    assert (s[1] == 0).all()
    # with one neighbour per history item only the item itself scores
    s1 = TfidfKNN(texts, min_df=1, neighbours=1).fit(d).score(["a"])[0]
    assert (s1 > 0).sum() == 1 and s1[1] > 0
    with pytest.raises(ValueError):
        TfidfKNN(texts[:3], min_df=1).fit(d)


def test_content_recency_weighted_mean():
    rng = np.random.default_rng(0)
    V = rng.normal(size=(5, 8)).astype(np.float32)
    d = TrainData.build(train([("a", "i0", 0), ("a", "i2", 10)]), ITEMS)
    s = Content(V, half_life_days=10).fit(d).score(["a"])[0]
    # i0 is one half-life older than i2: weights 0.5 and 1
    u = (0.5 * V[0] + 1.0 * V[2]) / 1.5
    assert np.allclose(s, V @ u, atol=1e-5)
    flat = Content(V, half_life_days=None).fit(d).score(["a"])[0]
    assert np.allclose(flat, V @ ((V[0] + V[2]) / 2), atol=1e-5)
    with pytest.raises(ValueError):
        Content(V[:3]).fit(d)


def two_cluster_frame(seed=0):
    """Shoppers 0-39 buy only items 0-19, shoppers 40-79 only items 20-39."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(80):
        lo = 0 if u < 40 else 20
        for d, i in enumerate(rng.choice(20, 8, replace=False)):
            rows.append((f"u{u}", f"i{lo + i}", d))
    return train(rows), [f"i{i}" for i in range(40)]


def test_bpr_learns_clusters_and_is_seeded():
    f, items = two_cluster_frame()
    d = TrainData.build(f, items)
    users = [f"u{u}" for u in range(80)]
    m = BPR(factors=8, epochs=60, lr=0.05, seed=1).fit(d)
    s = m.score(users)
    own = np.where(np.arange(80)[:, None] < 40, np.arange(40)[None, :] < 20, np.arange(40)[None, :] >= 20)
    # almost every shopper scores the mean own-cluster item above the mean other-cluster item
    assert ((s * own).sum(1) / own.sum(1) > (s * ~own).sum(1) / (~own).sum(1)).mean() > 0.95
    again = BPR(factors=8, epochs=60, lr=0.05, seed=1).fit(d).score(users)
    assert np.array_equal(s, again)
    assert m.score(["stranger"]).shape == (1, 40)


def test_simplex_grid_and_weight_selection():
    g = simplex_grid(["a", "b", "c"], 0.5)
    assert len(g) == 6 and all(abs(sum(w.values()) - 1) < 1e-9 for w in g)
    with pytest.raises(ValueError):
        simplex_grid(["a", "b"], 0.3)
    rng = np.random.default_rng(0)
    n_users, n_items = 400, 30
    targets = [[int(t)] for t in rng.integers(0, n_items, n_users)]
    good = rng.normal(size=(n_users, n_items))
    good[np.arange(n_users), [t[0] for t in targets]] += 2.5  # knows the answer, not by a wide margin
    noise = rng.normal(size=(n_users, n_items))
    w, grid = select_weights({"good": standardise(good), "noise": standardise(noise)}, targets, M.tie_keys(n_items), None, 0.25,
                             search="simplex")
    assert w == {"good": 1.0, "noise": 0.0}
    assert len(grid) == 5
    with pytest.raises(ValueError):
        select_weights({"good": good}, targets, M.tie_keys(n_items), None, search="random")


def test_coordinate_search_finds_history_first_then_similar():
    """A knows the shopper's history (recency order), B the right new item but puts history items on top
    in a random order: the best blend is A with a small weight on B, which a coarse simplex cannot express."""
    rng = np.random.default_rng(1)
    n_users, n_items, keys = 400, 60, M.tie_keys(60)
    A = np.zeros((n_users, n_items))
    B = rng.normal(0, 0.1, (n_users, n_items))
    targets = []
    for u in range(n_users):
        hist = rng.choice(n_items, 8, replace=False)
        A[u, hist] = 10 + np.arange(8) / 8  # the last one is the most recent
        B[u, hist] = 5 + rng.random(8)
        if u % 2:
            targets.append([int(hist[-1])])  # a re-buy of the most recent item
        else:
            new = int(rng.choice(np.setdiff1d(np.arange(n_items), hist)))
            B[u, new] = 3  # below every history item, above the rest
            targets.append([new])
    Z = {"A": standardise(A), "B": standardise(B)}
    single = {m: user_ndcg(Z[m], targets, keys, None).mean() for m in Z}
    w, tried = select_weights(Z, targets, keys, None)
    best = user_ndcg(blend(Z, w), targets, keys, None).mean()
    assert w["A"] == 1.0 and 0 < w["B"] < 0.3
    assert best > max(single.values()) + 0.1
    ws, _ = select_weights(Z, targets, keys, None, step=0.25, search="simplex")
    assert best > user_ndcg(blend(Z, ws), targets, keys, None).mean() + 0.05


def test_hybrid_scores_are_the_blend(synth_catalog):
    split = leave_last_out(purchases(synth_catalog), "item")
    d = TrainData.build(split.train, synth_catalog.ids)
    ctx = ModelContext([p.title for p in synth_catalog.products])
    comps = {"repeat": create_recommender("repeat", ctx), "popularity": create_recommender("popularity", ctx)}
    h = Hybrid(comps, {"repeat": 0.75, "popularity": 0.25}).fit(d)
    users = split.users[:5]
    expected = 0.75 * standardise(comps["repeat"].score(users)) + 0.25 * standardise(comps["popularity"].score(users))
    assert np.allclose(h.score(users), expected, atol=1e-5)
    with pytest.raises(ValueError):
        Hybrid(comps, {"bpr": 1.0})
    with pytest.raises(ValueError):
        create_recommender("content", ctx)  # no item vectors
    with pytest.raises(ValueError):
        create_recommender("popularity", ctx, window=3)
