"""The recommender layer: each model on tiny purchase tables whose right answer is known."""
import numpy as np
import pandas as pd
import pytest

from retrieval.catalog import Catalog, Product
from retrieval.recommenders import (ALS, BPR, Content, Hybrid, ModelContext, OtherColours, Popularity, RecommendConfig, Repeat,
                                    TfidfKNN, TrainData, create_recommender, drop_unbuildable, merge_same_day, standardise)
from retrieval.recommenders.data import History
from retrieval.recommenders.factory import needs_vectors

T = pd.Timestamp("2020-01-01")
ITEMS = ["i0", "i1", "i2", "i3", "i4"]


def train(rows):
    return pd.DataFrame([(u, i, T + pd.Timedelta(days=d)) for u, i, d in rows], columns=["user", "item", "timestamp"]).assign(
        weight=1.0, order=lambda f: range(len(f)))


ROWS = [("a", "i1", 0), ("a", "i2", 5), ("a", "i1", 1), ("b", "i3", 0), ("b", "i3", 30), ("c", "i3", 31), ("c", "i4", 31)]


def test_merge_same_day_counts_units_once():
    f = train([("a", "i1", 0), ("a", "i1", 0), ("a", "i1", 3), ("b", "i1", 0)])
    m = merge_same_day(f)
    assert len(m) == 3 and list(m["weight"]) == [2.0, 1.0, 1.0]
    assert list(m["order"]) == sorted(m["order"])  # file order kept


def test_popularity_global_and_window_before_the_day_asked():
    d = TrainData.build(train(ROWS), ITEMS)
    s = Popularity().fit(d).score(["a", "zz"])
    assert (s[0] == s[1]).all()
    assert list(np.argsort(-s[0], kind="stable")[:3]) == [3, 1, 2]  # i3 x3, i1 x2, then i2/i4 x1
    # asked on day 31 ("when"): a 2-day window holds day 30 only (day 31 itself is the future): i3 once
    pop = Popularity(window_days=2).fit(d)
    w = pop.score_histories([History(np.array([1]), np.array([0.0]), when=d.rows_day.min() + 31)])[0]
    assert w[3] > 1 > w[4] and w[1] < 1
    # anchored at the shopper's last purchase (a: day 5): i2 on day 5, i1 on day 1 are within 10 days
    u = Popularity(window_days=10, anchor="user").fit(d).score(["a"])[0]
    assert list(np.argsort(-u)[:3]) == [1, 3, 2]
    with pytest.raises(ValueError):
        Popularity(anchor="tomorrow")


def test_repeat_history_first_by_recency():
    d = TrainData.build(train(ROWS), ITEMS)
    s = Repeat().fit(d).score(["a"])[0]
    assert list(np.argsort(-s)) == [2, 1, 3, 4, 0]
    assert s[3] < 1e-3 < 2 <= s[1]


def test_tfidf_similar_text_ranks_first():
    texts = ["red wool scarf", "blue denim jeans", "red wool hat", "green cotton shirt", "blue denim jacket"]
    d = TrainData.build(train([("a", "i1", 0)]), ITEMS)
    s = TfidfKNN(texts, min_df=1, neighbours=None).fit(d).score(["a", "nobody"])
    assert list(np.argsort(-s[0])[:2]) == [1, 4]
    assert (s[1] == 0).all()
    s1 = TfidfKNN(texts, min_df=1, neighbours=1).fit(d).score(["a"])[0]  # the neighbour matrix path
    assert (s1 > 0).sum() == 1 and s1[1] > 0
    s2 = TfidfKNN(texts, min_df=1, neighbours=2).fit(d).score(["a"])[0]
    assert (s2 > 0).sum() == 2 and s2[4] > 0
    with pytest.raises(ValueError):
        TfidfKNN(texts[:3], min_df=1).fit(d)


def test_content_recency_weighted_mean():
    V = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    d = TrainData.build(train([("a", "i0", 0), ("a", "i2", 10)]), ITEMS)
    s = Content(V, half_life_days=10).fit(d).score(["a"])[0]
    assert np.allclose(s, V @ ((0.5 * V[0] + V[2]) / 1.5), atol=1e-5)
    with pytest.raises(ValueError):
        Content(V[:3]).fit(d)


def two_clusters(seed=0):
    """Shoppers 0-39 buy only items 0-19, shoppers 40-79 only items 20-39."""
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{(0 if u < 40 else 20) + i}", d) for u in range(80) for d, i in enumerate(rng.choice(20, 8, replace=False))]
    return TrainData.build(train(rows), [f"i{i}" for i in range(40)])


OWN = np.where(np.arange(80)[:, None] < 40, np.arange(40)[None, :] < 20, np.arange(40)[None, :] >= 20)


def own_cluster_first(s):
    return ((s * OWN).sum(1) / OWN.sum(1) > (s * ~OWN).sum(1) / (~OWN).sum(1)).mean()


@pytest.mark.parametrize("cls,params", [(ALS, dict(factors=8, iterations=10)), (BPR, dict(factors=8, iterations=200))])
def test_factorisation_learns_clusters_and_is_seeded(cls, params):
    d = two_clusters()
    users = [f"u{u}" for u in range(80)]
    m = cls(seed=1, **params).fit(d)
    s = m.score(users)
    assert own_cluster_first(s) > 0.95
    assert np.allclose(s, cls(seed=1, **params).fit(d).score(users), atol=1e-5)
    # a cart of cluster-2 items, not a trained shopper: folded in, cluster-2 items first
    cart = m.score_histories([History(np.array([25, 30]), np.array([0.0, 0.0]))])[0]
    assert cart[20:].mean() > cart[:20].mean()


def test_other_colours_proposes_variants_not_the_item():
    groups = np.array([0, 0, 0, 1, 2])
    d = TrainData.build(train([("a", "i3", 0), ("a", "i1", 1)]), ITEMS)
    s = OtherColours(groups).fit(d).score(["a"])[0]
    assert set(np.argsort(-s)[:2]) == {0, 2}  # the other colours of i1's product
    assert s[1] < s[0] and s[3] < s[0]


def test_hybrid_is_the_blend_and_factory_resolves_names():
    d = TrainData.build(train(ROWS), ITEMS)
    ctx = ModelContext(texts=["red wool scarf", "blue denim jeans", "red wool hat", "green cotton shirt", "blue denim jacket"],
                       groups=np.arange(5))
    specs = {"repeat": {"kind": "repeat"}, "pop": {"kind": "popularity"}, "mix": {"kind": "hybrid", "weights": {"repeat": 0.75, "pop": 0.25}}}
    h = create_recommender("mix", specs, ctx).fit(d)
    assert isinstance(h, Hybrid)
    exp = 0.75 * standardise(Repeat().fit(d).score(["a", "b"])) + 0.25 * standardise(Popularity().fit(d).score(["a", "b"]))
    assert np.allclose(h.score(["a", "b"]), exp, atol=1e-5)
    with pytest.raises(ValueError, match="unknown model"):
        create_recommender("nope", specs, ctx)
    with pytest.raises(ValueError, match="refers to itself"):
        create_recommender("x", {"x": {"kind": "hybrid", "weights": {"x": 1}}}, ctx)
    with pytest.raises(ValueError, match="bad parameters"):
        create_recommender("pop", {"pop": {"kind": "popularity", "window": 3}}, ctx)
    with pytest.raises(ValueError, match="item vectors"):
        create_recommender("c", {"c": {"kind": "content"}}, ctx)


def test_without_vectors_content_leaves_the_served_models():
    cfg = RecommendConfig()
    assert needs_vectors(cfg.models, "ranker") and not needs_vectors(cfg.models, "tfidf")
    specs = drop_unbuildable(cfg.models, ModelContext(texts=[]))
    assert "content" not in specs and "content" not in specs["ranker"]["candidates"]
    with pytest.raises(ValueError, match="not among"):
        RecommendConfig(model="nope")


# ----------------------------------------------------------------------------- the ranker
def pattern_catalog(n_users=240, seed=0) -> Catalog:
    """Each shopper's next purchase is either another colour of their latest product or a re-buy of
    their first item; neither `repeat` (most recent first) nor `other_colours` alone gets both."""
    rng = np.random.default_rng(seed)
    colours = ["black", "white", "red", "blue"]
    products = [Product(id=f"p{g:03d}{c}", title=f"top {g} {c}", description=f"cotton top model {g}", colour=c,
                        attributes={"product_type": "top", "colour": c}, category=["women", "top"], group_id=f"g{g}", price=1.0 + g % 7)
                for g in range(60) for c in colours]
    inter = []
    for u in range(n_users):
        first = products[int(rng.integers(len(products)))].id
        seq = [first, products[int(rng.integers(len(products)))].id]
        for _ in range(4):
            if rng.random() < 0.5:
                g = seq[-1][:4]
                seq.append(g + [c for c in colours if not seq[-1].endswith(c)][int(rng.integers(3))])
            else:
                seq.append(first)
        inter += [(f"u{u:03d}", item, T + pd.Timedelta(days=3 * n + int(rng.integers(0, 2))), 1.0) for n, item in enumerate(seq)]
    return Catalog(products, inter)


@pytest.mark.slow
def test_ranker_learns_what_no_single_source_knows():
    from eval import metrics as M
    from eval.splits import leave_last_out, purchases

    cat = pattern_catalog()
    split = leave_last_out(purchases(cat), "basket")
    d = TrainData.build(split.train, cat.ids)
    ctx = ModelContext.from_catalog(cat)
    cfg = RecommendConfig(item_vectors=None)
    specs = drop_unbuildable(cfg.models, ctx)
    specs["ranker"] = {**specs["ranker"], "lgbm": {"n_estimators": 100, "min_child_samples": 5}, "windows": 3}
    users = split.users
    keys = M.tie_keys(len(cat))
    targets = [[d.index[x] for x in split.test[u]] for u in users]

    def ndcg(name):
        m = create_recommender(name, specs, ctx).fit(d)
        S = m.score(users)
        return np.mean([M.ndcg_at_k(M.ranks_of(S[r], t, keys)[0], 10) for r, t in enumerate(targets)]), m

    best_single = max(ndcg(n)[0] for n in ("repeat", "other_colours", "tfidf", "als", "popularity"))
    ranked, model = ndcg("ranker")
    assert ranked > best_single + 0.05
    assert model.info["train_groups"] > 100 and "group_days_ago" in model.info["feature_importance_gain"]


def test_reasons_date_only_real_purchases():
    from retrieval.recommenders.reasons import history_reason

    ps = [Product(id="j1", title="Jeans", colour="Blue", attributes={"product_type": "Jeans"}, group_id="g"),
          Product(id="j2", title="Jeans", colour="Black", attributes={"product_type": "Jeans"}, group_id="g"),
          Product(id="t1", title="Top", colour="Red", attributes={"product_type": "Top"}, group_id="t")]
    groups = np.array([0, 0, 1])
    march = float((np.datetime64("2020-03-14") - np.datetime64("1970-01-01")) / np.timedelta64(1, "D"))
    h = History(np.array([0, 2]), np.array([march, march + 40]), undated=1)  # j1 bought in March; t1 only in the cart
    r = history_reason(1, ps, h, groups, None)
    assert r.kind == "other_colour" and r.text == "You bought these jeans in blue in March 2020. This one is black."
    assert r.item_id == "j1" and r.day == "2020-03-14" and [c.item_id for c in r.claims] == ["j1", "j2"]
    again = history_reason(2, ps, h, groups, None)
    assert again.kind == "bought_before" and again.day is None and "bought" not in again.text  # a cart item, not a purchase


def test_index_vectors_are_shared_and_content_aligns_its_own_copy(demo_searcher):
    from retrieval.recommenders.context import index_vectors
    from retrieval.recommenders.models import Content

    s = demo_searcher
    v = index_vectors(s.catalog, s.index)
    assert np.shares_memory(v, s.index.vectors)  # no second copy of the catalog's vectors
    raw = np.zeros(v.nbytes + 1, np.uint8)
    unaligned = np.frombuffer(raw[1:].data, np.float32).reshape(v.shape)  # as FAISS's memory-mapped storage can be
    unaligned[:] = v
    assert not unaligned.flags.aligned
    c = Content(unaligned)
    assert c.vectors.flags.aligned and np.array_equal(c.vectors, v)
