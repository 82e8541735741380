"""Fits made offline and loaded at start-up: the served recommender's fit (`whyrec index
fit-recommender`) and the search fact tables (`whyrec index build`) give what a fresh fit gives,
and a changed catalog is never served from a stale one."""
import numpy as np
import pytest

from retrieval.catalog import Catalog, Product
from retrieval.index import IndexParams, VectorIndex
from retrieval.recommenders import ModelContext, RecommendConfig, TfidfKNN, TrainData
from retrieval.recommenders import models as recommender_models
from retrieval.recommenders.serve import ServedRecommender
from tests.retrieval.test_recommenders import pattern_catalog

SMALL_RANKER = {"kind": "ranker", "candidates": {"repeat": 20, "other_colours": 20, "tfidf": 20, "content": 20, "als": 20},
                "windows": 2, "max_train_users": 120, "lgbm": {"n_estimators": 30, "min_child_samples": 5}}


def small_config(**kw) -> RecommendConfig:
    models = {**RecommendConfig().models, "ranker": SMALL_RANKER, "als": {"kind": "als", "factors": 8, "iterations": 5}}
    return RecommendConfig(model="ranker", models=models, **kw)


def real_index(catalog: Catalog, seed: int = 0) -> VectorIndex:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((len(catalog), 16)).astype(np.float32)
    return VectorIndex.build(v / np.linalg.norm(v, axis=1, keepdims=True), catalog.ids, IndexParams(factory="Flat", recall_queries=10))


@pytest.fixture(scope="module")
def shop():
    cat = pattern_catalog(n_users=160)
    return cat, real_index(cat)


def scores(rec: ServedRecommender, users) -> np.ndarray:
    return rec.model.score_histories(rec.data.histories(users))


@pytest.mark.slow
def test_a_saved_ranker_scores_as_a_fresh_fit(shop, tmp_path):
    cat, index = shop
    fresh = ServedRecommender.build(cat, small_config(), index, saved_dir=tmp_path, fit="always")
    assert fresh.source == "fitted"
    fresh.save(tmp_path)
    loaded = ServedRecommender.build(cat, small_config(), index, saved_dir=tmp_path)
    assert loaded.source == "saved"
    users = loaded.data.users[:40]
    np.testing.assert_array_equal(scores(loaded, users), scores(fresh, users))
    cart = [cat.ids[3], cat.ids[50]]  # a history no training shopper has: the restored sources answer it too
    assert [r.id for r in loaded.recommend(cart, 10)] == [r.id for r in fresh.recommend(cart, 10)]


@pytest.mark.slow
def test_a_changed_catalog_is_refitted_or_refused_never_served_stale(shop, tmp_path):
    cat, index = shop
    ServedRecommender.build(cat, small_config(), index, saved_dir=tmp_path, fit="always").save(tmp_path)
    products = list(cat.products)
    products[0] = Product(**{**products[0].__dict__, "title": "a wholly new title for this top"})
    changed = Catalog(products, cat.interactions)
    refit = ServedRecommender.build(changed, small_config(), index, saved_dir=tmp_path)
    assert refit.source == "fitted"
    fresh = ServedRecommender.build(changed, small_config(), index, fit="always")
    users = refit.data.users[:20]
    np.testing.assert_array_equal(scores(refit, users), scores(fresh, users))
    with pytest.raises(ValueError, match="stale.*fit-recommender"):
        ServedRecommender.build(changed, small_config(fit_at_start_max_items=10), index, saved_dir=tmp_path)
    fewer = Catalog(cat.products, cat.interactions_frame().iloc[:-5])  # purchases changed, products not
    assert ServedRecommender.build(fewer, small_config(), index, saved_dir=tmp_path).source == "fitted"


@pytest.fixture()
def tfidf_case(shop, monkeypatch):
    """(texts, training data, 30 histories, their scores from the full neighbour table), and the
    shop counted as a large catalog from then on (neighbour rows made on demand)."""
    cat, _ = shop
    ctx = ModelContext.from_catalog(cat)
    data = TrainData.from_interactions(cat.interactions, cat.ids, cat.row)
    hists = data.histories(data.users[:30])
    full = TfidfKNN(ctx.texts, neighbours=10).fit(data).score_histories(hists)
    monkeypatch.setattr(recommender_models, "FULL_TABLE_BELOW", 10)
    recommender_models._NEIGHBOUR_CACHE.clear()
    return ctx.texts, data, hists, full


def test_tfidf_rows_on_demand_equal_the_full_table(tfidf_case):
    texts, data, hists, full = tfidf_case
    lazy = TfidfKNN(texts, neighbours=10).fit(data)
    np.testing.assert_array_equal(lazy.score_histories(hists), full)
    assert not recommender_models._NEIGHBOUR_CACHE  # no full table was made
    restored = TfidfKNN(texts, neighbours=10).restore(data, lazy.fitted_state())
    assert set(restored._rows) == set(np.unique(data.hist_item).tolist())
    np.testing.assert_array_equal(restored.score_histories(hists), full)


def test_tfidf_saves_the_most_bought_rows_and_bounds_the_rest(tfidf_case):
    texts, data, hists, full = tfidf_case
    state = TfidfKNN(texts, neighbours=10, saved_rows=5).fit(data).fitted_state()
    items, counts = np.unique(data.hist_item, return_counts=True)
    assert len(items) > 5 and len(state["neighbour_items"]) == 5
    assert counts[np.isin(items, state["neighbour_items"])].min() >= np.sort(counts)[-5]  # the five most bought
    restored = TfidfKNN(texts, neighbours=10, row_cache=3).restore(data, state)
    np.testing.assert_array_equal(restored.score_histories(hists), full)  # the rest computed on demand, same numbers
    assert len(restored._rows) == 5 and len(restored._more_rows) <= 3  # nothing else held


def test_saved_fact_tables_are_the_computed_ones_and_checked(demo_searcher, tmp_path):
    from retrieval.search import Searcher, fact_tables, facts_fingerprint, load_fact_tables, save_fact_tables

    s = demo_searcher
    fp = facts_fingerprint(s.products, s.vocab)
    save_fact_tables(tmp_path, fact_tables(s.products, s.vocab), fp)
    loaded = Searcher(s.catalog, s.encoder, s.index, s.cfg, s.vocab, s.lexical, s.fusion, facts_dir=tmp_path)
    for name in ("strong_postings", "weak_postings", "colour_postings", "category_postings"):
        a, b = getattr(loaded, name), getattr(s, name)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(loaded.prices, s.prices)
    q = "black cotton dress"
    assert [h.id for h in loaded.search(q, 10)] == [h.id for h in s.search(q, 10)]
    products = list(s.products)
    products[0] = Product(**{**products[0].__dict__, "colour": "Chartreuse"})
    assert load_fact_tables(tmp_path, facts_fingerprint(products, s.vocab)) is None  # another catalog: not used


def test_large_catalogs_read_the_latest_items_of_a_long_history(tfidf_case):
    texts, data, _, _ = tfidf_case
    h = max(data.histories(data.users), key=lambda h: len(np.unique(h.items)))
    latest = list(dict.fromkeys(h.items[::-1].tolist()))[:3]  # its three most recently bought distinct items
    capped = TfidfKNN(texts, neighbours=10, max_history=3).fit(data)
    capped.score_histories([h])
    assert len(np.unique(h.items)) > 3 and set(capped._more_rows._data) == set(latest)  # only their rows were made
