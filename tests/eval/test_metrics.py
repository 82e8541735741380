"""Metrics against values worked out by hand (see the comments)."""
import math

import numpy as np
import pytest

from eval import metrics as m

# ranked list a b c d e, relevant {b, d}: ranks 2 and 4 among 5 candidates
RANKED = ["a", "b", "c", "d", "e"]
REL = {"b", "d"}


def test_ranks_in_list():
    assert m.ranks_in_list(RANKED, REL) == [2, 4]
    # a relevant item missing from a truncated list goes to the worst rank
    assert m.ranks_in_list(["a", "b"], {"b", "z"}, n_candidates=10) == [2, 10]


def test_hand_computed_two_relevant():
    r = m.ranks_in_list(RANKED, REL)
    assert m.recall_at_k(r, 3) == 0.5
    assert m.hit_rate_at_k(r, 3) == 1.0
    assert m.hit_rate_at_k(r, 1) == 0.0
    assert m.precision_at_k(r, 3) == pytest.approx(1 / 3)
    assert m.reciprocal_rank(r) == 0.5
    # DCG@3 = 1/log2(3); ideal for 2 relevant = 1 + 1/log2(3)
    assert m.ndcg_at_k(r, 3) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert m.ndcg_at_k(r, 3) == pytest.approx(0.386853, abs=1e-6)
    # DCG@5 = 1/log2(3) + 1/log2(5)
    assert m.ndcg_at_k(r, 5) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    # AP = (1/2 + 2/4) / 2
    assert m.average_precision(r) == 0.5
    # pairs (relevant, non-relevant) in order: b beats c,e; d beats e -> 3 of 6
    assert m.auc(r, 5) == 0.5


def test_extremes():
    assert m.ranking_metrics([1], 5, ks=(1, 10)) == {
        "recall@1": 1.0, "hit@1": 1.0, "precision@1": 1.0, "ndcg@1": 1.0,
        "recall@10": 1.0, "hit@10": 1.0, "precision@10": 0.1, "ndcg@10": 1.0,
        "mrr": 1.0, "map": 1.0, "auc": 1.0}
    assert m.auc([5], 5) == 0.0
    assert m.ndcg_at_k([11], 10) == 0.0
    assert m.reciprocal_rank([]) == 0.0
    with pytest.raises(ValueError):
        m.recall_at_k([0], 1)


def test_ranks_of_tie_break_and_exclusion():
    scores = np.array([0.1, 0.5, 0.5, 0.9, 0.0])
    keys = np.arange(5)
    # item 2 (0.5) is below item 3 (0.9) and item 1 (same score, smaller key)
    assert m.ranks_of(scores, [2], keys) == ([3.0], 5)
    assert m.ranks_of(scores, [1, 2], keys) == ([2.0, 3.0], 5)
    ex = np.array([False, False, False, True, False])
    assert m.ranks_of(scores, [2], keys, ex) == ([2.0], 4)
    # an excluded target cannot be shown: it goes below every candidate
    r, n = m.ranks_of(scores, [3], keys, ex)
    assert r == [5.0] and n == 5
    assert m.auc(r, n) == 0.0 and m.ndcg_at_k(r, 10) < 0.5 and m.hit_rate_at_k(r, 4) == 0.0


def test_top_k_agrees_with_ranks():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=200).astype(float)  # many ties
    keys = m.tie_keys(200, seed=1)
    ex = rng.random(200) < 0.2
    order = m.top_k(scores, 200, keys, ex)
    assert len(order) == (~ex).sum()
    for pos, item in enumerate(order[:50], 1):
        assert m.ranks_of(scores, [item], keys, ex)[0] == [float(pos)]
    # the vectorised single-target version gives the same ranks
    S = np.stack([scores, scores[::-1]])
    t = np.array([order[7], 5])
    E = np.stack([ex, ex])
    ranks, n = m.single_target_ranks(S, t, keys, E)
    assert ranks[0] == 8.0
    assert ranks[1] == m.ranks_of(S[1], [5], keys, ex)[0][0]
    assert list(n) == [m.ranks_of(S[i], [t[i]], keys, ex)[1] for i in range(2)]


def test_sampled_auc_vs_full():
    scores = np.array([0.2, 0.4, 0.6, 0.8])
    keys = np.arange(4)
    # full AUC: item 1 beats only item 0 of three negatives
    assert m.auc(m.ranks_of(scores, [1], keys)[0], 4) == pytest.approx(1 / 3)
    est = m.sampled_auc(scores, [1], keys, 30000, np.random.default_rng(0))
    assert abs(est - 1 / 3) < 0.02
    assert m.sampled_auc(scores, [3], keys, 100, np.random.default_rng(0)) == 1.0
    assert m.sampled_auc(scores, [0], keys, 100, np.random.default_rng(0)) == 0.0


def test_bootstrap():
    const = m.bootstrap_ci([0.4] * 50)
    assert np.allclose([const.mean, const.low, const.high], 0.4) and const.n == 50
    v = (np.random.default_rng(0).random(1000) < 0.3).astype(float)
    e = m.bootstrap_ci(v, n_boot=2000)
    assert e.low < e.mean < e.high
    # normal approximation: half width 1.96 * sqrt(.21 / 1000) = 0.028
    assert 0.045 < e.high - e.low < 0.07
    assert m.bootstrap_ci([1.0, float("nan"), 0.0]).n == 2
    d = m.paired_bootstrap_diff(v + 0.1, v)
    assert d.mean == pytest.approx(0.1) and d.low == pytest.approx(0.1) and d.excludes_zero
    same = m.paired_bootstrap_diff(v, v[::-1].copy())
    assert not same.excludes_zero


def test_sample_size():
    # 2 * ((1.95996 + 0.84162) * 1 / 0.1)^2 = 1569.8
    assert m.sample_size_two_means(0.1, 1.0) == pytest.approx(1569.8, abs=0.5)
    assert m.sample_size_one_mean(0.1, 1.0) == pytest.approx(784.9, abs=0.5)
    assert m.sample_size_two_means(0.0, 1.0) == float("inf")


def test_sampled_hit_and_ndcg_are_inflated():
    # the target outranks 990 of 1000 items: full-catalog rank 11, but among 100 random negatives ~rank 2
    scores = np.arange(1000, dtype=float)
    keys = np.arange(1000)
    ranks, n = m.ranks_of(scores, [989], keys)
    assert ranks == [11.0] and m.hit_rate_at_k(ranks, 10) == 0.0
    rng = np.random.default_rng(0)
    runs = [m.sampled_metrics(scores, [989], keys, 100, rng) for _ in range(200)]
    assert np.mean([r["hit@10"] for r in runs]) > 0.99
    assert np.mean([r["auc"] for r in runs]) == pytest.approx(m.auc(ranks, n), abs=0.005)
    ex = np.zeros(1000, bool)
    ex[989] = True
    assert m.sampled_metrics(scores, [989], keys, 100, rng, ex) == {"auc": 0.0, "hit@10": 0.0, "ndcg@10": 0.0}


def test_scores_are_batched_within_a_memory_bound_at_any_catalog_size():
    from eval.metrics import SCORE_CELLS, score_batch_rows

    assert score_batch_rows(17_000, 1024) == 1024  # the H&M sample keeps its batches (and its seeded negatives)
    for n_items in (10, 17_000, 1_000_000, 50_000_000):
        rows = score_batch_rows(n_items, 1024)
        assert 1 <= rows <= 1024 and (rows == 1 or rows * n_items <= SCORE_CELLS)
    assert score_batch_rows(1_000_000, 1024) * 1_000_000 * 4 <= 128 << 20  # float32 scores of one batch: <= 128 MB
