"""`evaluate_recommenders` on the synthetic catalog: the served recommend: section, by name, on three splits."""
import json

import numpy as np
import pytest
import yaml

from eval.rec_eval import RecEvalConfig, evaluate_recommenders, map_at_k, ratio_bootstrap, rec_markdown

FAST = {
    "model": "ranker",
    "item_vectors": None,
    "models": {
        "popularity": {"kind": "popularity"},
        "pop_recent": {"kind": "popularity", "window_days": 14},
        "repeat": {"kind": "repeat"},
        "other_colours": {"kind": "other_colours"},
        "tfidf": {"kind": "tfidf", "min_df": 1},
        "als": {"kind": "als", "factors": 8, "iterations": 5},
        "content": {"kind": "content"},
        "hybrid": {"kind": "hybrid", "weights": {"repeat": 1.0, "tfidf": 0.1}},
        "ranker": {"kind": "ranker", "candidates": {"repeat": 10, "other_colours": 10, "tfidf": 20, "pop_recent": 10, "content": 10},
                   "windows": 2, "lgbm": {"n_estimators": 30, "min_child_samples": 5}},
    },
}


@pytest.fixture(scope="module")
def result(synth_catalog, tmp_path_factory):
    vec = np.random.default_rng(0).normal(size=(len(synth_catalog), 16)).astype(np.float32)
    path = tmp_path_factory.mktemp("vec") / "v.npy"
    np.save(path, vec)
    serve_yaml = path.parent / "serve.yaml"  # the served section as a file: its `models` replace the defaults whole
    serve_yaml.write_text(yaml.safe_dump({"recommend": FAST}))
    cfg = RecEvalConfig(recommend_config=str(serve_yaml), item_vectors=str(path), modes=["basket", "week", "item"], weeks=2,
                        bootstrap=100, latency_users=2)
    return evaluate_recommenders(synth_catalog, cfg, "synthetic")


@pytest.mark.slow
def test_every_split_every_model_with_intervals_and_the_served_one(result):
    json.dumps(result)  # JSON-ready
    assert result["served_model"] == "ranker"
    assert set(result["modes"]) == {"basket", "week", "item"}
    assert result["modes"]["item"]["split"]["protocol"].startswith("LEAKY")
    assert len(result["modes"]["week"]["split"]["splits"]) == 2
    for mode in result["modes"].values():
        assert set(mode["tables"]) == {"with_bought", "without_bought"}
        for table in mode["tables"].values():
            models = table["slices"]["all"]["models"]
            assert set(models) == set(FAST["models"])
            for m in ("recall@10", "ndcg@10", "map@12", "auc"):
                e = models["ranker"][m]
                assert e["low"] - 1e-9 <= e["mean"] <= e["high"] + 1e-9
            best = table["best_single"]
            assert best not in ("hybrid", "ranker") and set(table["vs_best"]) == set(FAST["models"]) - {best}
            assert models[best]["ndcg@10"]["mean"] == max(models[m]["ndcg@10"]["mean"] for m in models if m not in ("hybrid", "ranker"))


@pytest.mark.slow
def test_ranker_reports_candidates_importance_and_time(result):
    info = result["modes"]["basket"]["ranker"]["ranker"]["splits"][0]
    assert info["fit_s"] > 0 and info["train_groups"] > 0
    cr = info["candidate_recall"]
    assert set(cr) == {"repeat", "other_colours", "tfidf", "pop_recent", "content", "union"}
    assert cr["union"]["recall"] >= max(r[f"recall@{n}"] for r, n in ((cr["repeat"], 10), (cr["tfidf"], 20)))
    assert "bought_days_ago" in info["feature_importance_gain"]


@pytest.mark.slow
def test_repeat_slice_and_exclusion(result):
    t = result["modes"]["item"]["tables"]
    rep = t["with_bought"]["slices"]["repeat"]
    assert rep["n"] > 0 and rep["models"]["repeat"]["hit@10"]["mean"] == 1.0
    for m in t["without_bought"]["slices"]["repeat"]["models"].values():
        assert m["recall@50"]["mean"] == 0.0  # a bought test item cannot be shown once bought items are removed
    s = t["with_bought"]["slices"]
    assert s["novel"]["n"] + s["repeat"]["n"] == s["all"]["n"]


@pytest.mark.slow
def test_markdown_names_the_split_and_the_served_model(result):
    md = rec_markdown(result)
    assert "## Split `basket`: leak-free" in md and "**ranker** (served)" in md and "candidate recall" in md


def test_map_at_12_and_ratio():
    assert map_at_k([1.0, 3.0], 2) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert map_at_k([13.0], 1) == 0.0
    assert map_at_k([2.0], 20) == pytest.approx(0.5 / 12)  # divided by min(relevant, 12)
    a, b = np.array([0.2, 0.4, 0.6]), np.array([0.1, 0.2, 0.3])
    r = ratio_bootstrap(a, b, 200, 0)
    assert r["mean"] == pytest.approx(2.0) and r["low"] == pytest.approx(2.0) and r["high"] == pytest.approx(2.0)


def test_unknown_models_and_modes(synth_catalog):
    with pytest.raises(ValueError):
        RecEvalConfig(modes=["session"])
    with pytest.raises(ValueError, match="unknown model"):
        evaluate_recommenders(synth_catalog, RecEvalConfig(recommend=FAST, item_vectors="none", models=["nope"], modes=["basket"]))
    # without vectors, content drops out of the models and of the ranker's sources
    r = evaluate_recommenders(synth_catalog, RecEvalConfig(recommend=FAST, item_vectors="none", models=["popularity", "content"],
                                                           modes=["basket"], exclude_bought=[True], bootstrap=50, latency_users=1))
    assert set(r["modes"]["basket"]["tables"]["without_bought"]["slices"]["all"]["models"]) == {"popularity"}
