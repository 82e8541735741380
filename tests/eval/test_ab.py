import numpy as np
import pytest

from eval.ab import ABConfig, ClickModel, cascade_clicks, perturb, run_ab, simulate, team_draft


def test_cascade_position_bias():
    rng = np.random.default_rng(0)
    cm = ClickModel(continue_prob=0.8, stop_after_click=1.0)
    clicks = cascade_clicks(np.full((100_000, 5), 0.5), cm, rng)
    # first click at position i with prob (0.5 * 0.8)^i * 0.5; never two clicks when clicks stop the scan
    p = clicks.mean(0)
    assert p[0] == pytest.approx(0.5, abs=0.01) and p[1] == pytest.approx(0.2, abs=0.01) and p[2] == pytest.approx(0.08, abs=0.01)
    assert clicks.sum(1).max() == 1
    # certain click on the second item, and the shopper always looks on: exactly that click
    att = np.tile([0.0, 1.0, 0.0], (10, 1))
    assert (cascade_clicks(att, ClickModel(continue_prob=1.0), rng) == att.astype(bool)).all()
    assert not cascade_clicks(att, ClickModel(continue_prob=0.0), rng).any()
    with pytest.raises(ValueError):
        ClickModel(relevant=1.5)


def test_team_draft():
    rng = np.random.default_rng(0)
    items, teams = team_draft([1, 2, 3], [1, 2, 3], 3, rng)
    assert items == [1, 2, 3] and abs(sum(teams) - (len(teams) - sum(teams))) <= 1
    for _ in range(20):
        items, teams = team_draft([1, 2, 5, 6], [3, 4, 5, 7], 6, rng)
        a = [x for x, t in zip(items, teams) if t == 0]
        b = [x for x, t in zip(items, teams) if t == 1]
        assert len(set(items)) == 6 and abs(len(a) - len(b)) <= 1
        # each team contributes its items in its own order
        assert a == [x for x in [1, 2, 5, 6] if x in a] and b == [x for x in [3, 4, 5, 7] if x in b]
    assert team_draft([1], [], 3, rng) == ([1], [0])


def test_perturb():
    rng = np.random.default_rng(0)
    r = np.tile(np.arange(10), (50, 1))
    p = perturb(r, 0.3, 1000, rng)
    assert ((p != r).sum(1) == 3).all()
    assert all(len(set(row)) == 10 for row in p)


def test_simulate_detects_a_known_difference():
    # A shows the bought item first for every shopper, B never shows it
    n = 200
    targets = [{i} for i in range(n)]
    groups = np.arange(1000).astype(object)
    a = np.array([[i] + list(range(500, 509)) for i in range(n)])
    b = np.array([list(range(600, 610)) for _ in range(n)])
    res = simulate(a, b, targets, groups, sessions=4000, bootstrap=300)
    assert res["ab_split"]["lift"]["high"] < -0.5
    assert res["interleaving"]["delta"]["high"] < -0.5
    assert res["ab_split"]["sessions_per_arm_needed"] < 100


def test_identical_configurations_cover_zero(synth_catalog):
    res = run_ab(synth_catalog, ABConfig(a="repeat", b="repeat", sessions=20000, bootstrap=500, seed=1))
    lift, delta = res["ab_split"]["lift"], res["interleaving"]["delta"]
    assert lift["low"] <= 0 <= lift["high"]
    assert delta["low"] <= 0 <= delta["high"]


def test_thirty_percent_random_results_lose(synth_catalog):
    res = run_ab(synth_catalog, ABConfig(a="repeat", b="repeat", b_perturb=0.3, sessions=20000, bootstrap=500, seed=1))
    lift, delta = res["ab_split"]["lift"], res["interleaving"]["delta"]
    assert lift["high"] < 0, lift  # A wins and the interval excludes 0
    assert delta["high"] < 0, delta
    # interleaving needs fewer sessions than an A/B split to see the same difference
    assert res["interleaving"]["sessions_needed"] < 2 * res["ab_split"]["sessions_per_arm_needed"]


def test_unknown_configuration(synth_catalog):
    with pytest.raises(ValueError, match="unknown configuration"):
        run_ab(synth_catalog, ABConfig(a="nope"))
