import json

import numpy as np
import pytest

from eval.rec_eval import RecEvalConfig, evaluate_recommenders, rec_markdown

FAST_MODELS = {
    "popularity": {"kind": "popularity"},
    "repeat": {"kind": "repeat"},
    "tfidf": {"kind": "tfidf", "min_df": 1},
    "bpr": {"kind": "bpr", "factors": 8, "epochs": 5},
    "content": {"kind": "content"},
}


@pytest.fixture(scope="module")
def result(synth_catalog, tmp_path_factory):
    vec = np.random.default_rng(0).normal(size=(len(synth_catalog), 16)).astype(np.float32)
    path = tmp_path_factory.mktemp("vec") / "v.npy"
    np.save(path, vec)
    cfg = RecEvalConfig(models=FAST_MODELS, hybrid={"components": ["content", "tfidf", "repeat"], "step": 0.5},
                        bootstrap=200, latency_users=3, item_vectors=str(path))
    return evaluate_recommenders(synth_catalog, cfg, "synthetic")


def test_tables_shape(result):
    json.dumps(result)  # JSON-ready
    assert set(result["modes"]) == {"item", "basket"}
    for mode in result["modes"].values():
        assert set(mode["tables"]) == {"with_bought", "without_bought"}
        for table in mode["tables"].values():
            models = table["slices"]["all"]["models"]
            assert set(models) == set(FAST_MODELS) | {"hybrid"}
            for est in models["tfidf"].values():
                assert est["low"] - 1e-9 <= est["mean"] <= est["high"] + 1e-9
            assert set(table["hybrid_vs"]) == set(FAST_MODELS)
        w = mode["hybrid"]["with_bought"]["weights"]
        assert max(w.values()) == 1.0 and min(w.values()) >= 0


def test_repeat_slice_and_exclusion(result):
    t = result["modes"]["item"]["tables"]
    rep = t["with_bought"]["slices"]["repeat"]
    assert rep["n"] > 0
    # the repeat baseline ranks a re-bought item at the very top among a handful of own purchases
    assert rep["models"]["repeat"]["hit@10"]["mean"] == 1.0
    assert rep["models"]["repeat"]["ndcg@10"]["mean"] > rep["models"]["popularity"]["ndcg@10"]["mean"]
    # with bought items removed a re-bought test item can never be shown: every model misses
    for m in t["without_bought"]["slices"]["repeat"]["models"].values():
        assert m["recall@50"]["mean"] == 0.0 and m["auc"]["mean"] == 0.0
    # novel + repeat partition the shoppers
    s = t["with_bought"]["slices"]
    assert s["novel"]["n"] + s["repeat"]["n"] == s["all"]["n"]
    assert s["no_text"]["n"] >= 0 and s["other_colour"]["n"] > 0


def test_markdown(result):
    md = rec_markdown(result)
    assert "### item / without bought" in md and "| hybrid |" in md and "hybrid minus model" in md


def test_no_vectors_skips_content(synth_catalog):
    cfg = RecEvalConfig(models={"popularity": {"kind": "popularity"}, "content": {"kind": "content"}}, modes=["item"],
                        exclude_bought=[True], hybrid=None, bootstrap=50, latency_users=1)
    r = evaluate_recommenders(synth_catalog, cfg)
    assert set(r["modes"]["item"]["tables"]["without_bought"]["slices"]["all"]["models"]) == {"popularity"}
    with pytest.raises(ValueError):
        RecEvalConfig(modes=["session"])
