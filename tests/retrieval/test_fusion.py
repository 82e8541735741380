"""Fusing dense, BM25 and fact scores; fitting the fusion without labels."""
import numpy as np
import pytest

from retrieval.fusion import FIXED, FusionSettings, Signals, _rank_of, fuse, grid, ndcg_at


def sig(dense, bm25, facts, violates=None):
    n = len(dense)
    return Signals(np.arange(n), np.array(dense, np.float32), np.array(bm25, np.float32), np.array(facts, np.float32),
                   np.zeros(n, bool) if violates is None else np.array(violates))


def test_rank_ties_share_the_better_rank():
    assert _rank_of(np.array([0.5, 0.9, 0.5, 0.1])).tolist() == [2, 1, 2, 4]


def test_each_fixed_ranker_orders_by_its_own_signal():
    s = sig([0.9, 0.1, 0.5], [0.0, 3.0, 1.0], [0.0, 0.5, 1.0])
    order = lambda name: np.argsort(-fuse(s, FIXED[name])).tolist()  # noqa: E731
    assert order("dense") == [0, 2, 1] and order("bm25") == [1, 2, 0] and order("facts") == [2, 1, 0]
    assert order("rrf")[0] == 2  # second on two signals and first on one beats first on one only


def test_a_broken_negation_goes_below_everything_in_fused_rankers():
    s = sig([0.9, 0.1], [5.0, 0.1], [1.0, 0.2], violates=[True, False])
    for name in ("rrf", "facts", "bm25"):
        assert np.argmax(fuse(s, FIXED[name])) == 1
    assert np.argmax(fuse(s, FIXED["dense"])) == 0  # dense alone knows nothing of negation


def test_rrf_gives_nothing_for_a_missing_signal():
    s = sig([0.2, 0.1], [0.0, 0.0], [0.0, 0.0])
    assert (fuse(s, FusionSettings("rrf", 0.0, 1.0, 1.0)) == 0).all()


def test_grid_holds_the_fixed_rankers_and_bad_kinds_fail():
    assert set(FIXED.values()) <= set(grid())
    with pytest.raises(ValueError):
        FusionSettings("max")


def test_ndcg():
    assert ndcg_at(np.array([1, 0, 0]), 1) == 1.0
    assert ndcg_at(np.array([0, 1]), 1) == pytest.approx(1 / np.log2(3))
    assert ndcg_at(np.array([0, 0]), 0) == 0.0


@pytest.mark.slow
def test_pseudo_queries_do_not_depend_on_the_process_hash_seed(demo_config, tmp_path):
    """The fitted fusion must be reproducible: the same catalog gives the same pseudo-queries in any
    process (string hashing, and so set order, changes with PYTHONHASHSEED)."""
    import os
    import subprocess
    import sys

    import yaml

    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(demo_config))
    code = ("from retrieval.search import Searcher; from retrieval.fusion import pseudo_queries; "
            f"print('\\n'.join(q.text for q in pseudo_queries(Searcher.from_config({str(cfg)!r}), 200, 0)))")
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=600)
        runs.append(out.stdout.split("\n"))
    assert len(runs[0]) > 20 and runs[0] == runs[1]
