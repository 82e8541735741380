"""`whyrec eval ab`: an offline A/B simulation of two recommendation configurations.

Simulated shoppers are held-out customers of a temporal split: each session draws one of them
(with replacement) and shows a top-k list. Clicks follow a position-biased cascade model: the
shopper scans the list from the top, clicks an item with a probability set by what it is to them
(`relevant`: an item they really bought next; `same_group`: another colour of it; `other`), stops
after a click (with `stop_after_click`), and after a non-click goes on to the next position with
`continue_prob` (so lower positions are seen less: the position bias).

Two designs compare configurations A and B:
- A/B split: each session goes to A or B at random; the metric is the share of sessions with a click
  (click-through); lift = B - A with a bootstrap 95% interval (arms resampled independently), and the
  sessions per arm needed to detect that lift (two-sided z test, alpha 0.05, power 0.8).
- Team-draft interleaving (Radlinski et al. 2008): every session sees one list merged from A and B;
  clicks are credited to the team that placed the item; per session B wins (+1), A wins (-1) or tie (0);
  delta = mean outcome with a bootstrap interval and the sessions needed. It needs far fewer sessions.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from eval import metrics as M

log = logging.getLogger(__name__)


@dataclass
class ClickModel:
    relevant: float = 0.9
    same_group: float = 0.3
    other: float = 0.02
    continue_prob: float = 0.85
    stop_after_click: float = 1.0

    def __post_init__(self):
        for k, v in asdict(self).items():
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"click model {k} must be a probability, not {v}")


def attractiveness(items: np.ndarray, targets: set[int], groups: np.ndarray, target_groups: set, cm: ClickModel) -> np.ndarray:
    """Click probability of each shown item for one shopper (item index -1 = empty slot: 0)."""
    out = np.full(items.shape, cm.other, np.float64)
    for pos, it in enumerate(items):
        if it < 0:
            out[pos] = 0.0
        elif it in targets:
            out[pos] = cm.relevant
        elif groups[it] in target_groups:
            out[pos] = cm.same_group
    return out


def cascade_clicks(attract: np.ndarray, cm: ClickModel, rng: np.random.Generator) -> np.ndarray:
    """(sessions, k) clicks under the cascade model, vectorised over sessions."""
    n, k = attract.shape
    clicks = np.zeros((n, k), bool)
    active = np.ones(n, bool)
    for i in range(k):
        c = active & (rng.random(n) < attract[:, i])
        clicks[:, i] = c
        stop = np.where(c, rng.random(n) < cm.stop_after_click, rng.random(n) >= cm.continue_prob)
        active &= ~stop
    return clicks


def team_draft(a: Sequence[int], b: Sequence[int], k: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Team-draft interleaving of two rankings: (items, team per item: 0 = A, 1 = B)."""
    items: list[int] = []
    teams: list[int] = []
    seen: set[int] = set()
    ia = ib = 0
    na = nb = 0
    while len(items) < k:
        while ia < len(a) and a[ia] in seen:
            ia += 1
        while ib < len(b) and b[ib] in seen:
            ib += 1
        if ia >= len(a) and ib >= len(b):
            break
        pick_a = (na < nb or (na == nb and rng.random() < 0.5)) if ia < len(a) and ib < len(b) else ia < len(a)
        item = a[ia] if pick_a else b[ib]
        items.append(int(item))
        teams.append(0 if pick_a else 1)
        seen.add(item)
        if pick_a:
            na += 1
        else:
            nb += 1
    return items, teams


def perturb(rankings: np.ndarray, share: float, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """Replace round(share * k) positions of each list with random items not already in it."""
    out = rankings.copy()
    k = rankings.shape[1]
    m = int(round(share * k))
    for r in range(len(out)):
        for pos in rng.choice(k, m, replace=False):
            while True:
                x = int(rng.integers(n_items))
                if x not in out[r]:
                    out[r, pos] = x
                    break
    return out


def simulate(rank_a: np.ndarray, rank_b: np.ndarray, targets: list[set[int]], groups: np.ndarray, sessions: int = 20000,
             cm: ClickModel | None = None, bootstrap: int = 1000, alpha: float = 0.05, power: float = 0.8, seed: int = 0) -> dict[str, Any]:
    """A/B split and team-draft interleaving of two rankings of the same shoppers (rows)."""
    cm = cm or ClickModel()
    if rank_a.shape != rank_b.shape or len(rank_a) != len(targets):
        raise ValueError("rankings A and B need one row per shopper, same k")
    rng = np.random.default_rng(seed)
    n_users, k = rank_a.shape
    tgroups = [{groups[t] for t in ts} for ts in targets]
    att = {arm: np.stack([attractiveness(r[u], targets[u], groups, tgroups[u], cm) for u in range(n_users)])
           for arm, r in (("a", rank_a), ("b", rank_b))}
    who = rng.integers(0, n_users, sessions)

    # A/B split
    arm_b = rng.random(sessions) < 0.5
    clicked = np.empty(sessions)
    for arm, mask in (("a", ~arm_b), ("b", arm_b)):
        clicked[mask] = cascade_clicks(att[arm][who[mask]], cm, rng).any(1)
    ya, yb = clicked[~arm_b], clicked[arm_b]
    ib = rng.integers(0, len(yb), (bootstrap, len(yb)))
    ia = rng.integers(0, len(ya), (bootstrap, len(ya)))
    diffs = yb[ib].mean(1) - ya[ia].mean(1)
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    lift = float(yb.mean() - ya.mean())
    sd = float(np.sqrt((ya.var(ddof=1) * (len(ya) - 1) + yb.var(ddof=1) * (len(yb) - 1)) / (len(ya) + len(yb) - 2)))
    ab = {"sessions": {"a": int(len(ya)), "b": int(len(yb))},
          "ctr_a": M.bootstrap_ci(ya, bootstrap, alpha, seed).to_dict(), "ctr_b": M.bootstrap_ci(yb, bootstrap, alpha, seed).to_dict(),
          "lift": {"mean": lift, "low": float(lo), "high": float(hi), "n": sessions},
          "relative_lift": lift / ya.mean() if ya.mean() > 0 else float("nan"),
          "sessions_per_arm_needed": M.sample_size_two_means(lift, sd, alpha, power)}

    # team-draft interleaving
    inter_items = np.full((sessions, k), -1, np.int64)
    inter_teams = np.zeros((sessions, k), np.int64)
    for s, u in enumerate(who):
        items, teams = team_draft(rank_a[u], rank_b[u], k, rng)
        inter_items[s, : len(items)] = items
        inter_teams[s, : len(teams)] = teams
    att_i = np.stack([attractiveness(inter_items[s], targets[u], groups, tgroups[u], cm) for s, u in enumerate(who)])
    clicks = cascade_clicks(att_i, cm, rng)
    credit_b = (clicks & (inter_teams == 1)).sum(1)
    credit_a = (clicks & (inter_teams == 0)).sum(1)
    outcome = np.sign(credit_b - credit_a).astype(np.float64)
    est = M.bootstrap_ci(outcome, bootstrap, alpha, seed)
    inter = {"sessions": sessions, "delta": est.to_dict(), "wins_a": int((outcome < 0).sum()), "wins_b": int((outcome > 0).sum()),
             "ties": int((outcome == 0).sum()), "sessions_needed": M.sample_size_one_mean(est.mean, float(outcome.std(ddof=1)), alpha, power)}
    return {"ab_split": ab, "interleaving": inter, "click_model": asdict(cm), "k": k, "shoppers": n_users}


# ----------------------------------------------------------------------------- from a catalog
@dataclass
class ABConfig:
    """`eval_ab:` section. `a`, `b`: names of entries of `models` (same form as eval_rec's)."""

    a: str = "repeat"
    b: str = "tfidf"
    b_perturb: float = 0.0  # replace this share of B's results at random (B = A perturbed when b == a)
    models: dict[str, dict] = field(default_factory=dict)
    mode: str = "basket"
    k: int = 10
    sessions: int = 20000
    click: ClickModel = field(default_factory=ClickModel)
    bootstrap: int = 1000
    alpha: float = 0.05
    power: float = 0.8
    min_train: int = 1
    seed: int = 0
    heads: str | None = None
    item_vectors: str | None = None
    cache_dir: str = "var/cache/features"

    def __post_init__(self):
        if isinstance(self.click, dict):
            self.click = ClickModel(**self.click)
        if not 0.0 <= self.b_perturb <= 1.0:
            raise ValueError("b_perturb must lie in [0, 1]")


def _rankings(model, users: list[str], k: int, keys: np.ndarray, batch: int = 256) -> np.ndarray:
    out = np.empty((len(users), k), np.int64)
    batch = M.score_batch_rows(len(keys), batch)
    for s in range(0, len(users), batch):
        S = model.score(users[s : s + batch])
        for r, row in enumerate(S):
            out[s + r] = M.top_k(row, k, keys)
    return out


def run_ab(catalog, cfg: ABConfig | None = None, data_path: str = "") -> dict[str, Any]:
    """Fit A and B on a leave-last-out split, rank the held-out shoppers, simulate sessions."""
    from eval.rec_eval import load_item_vectors
    from eval.splits import leave_last_out, purchases
    from retrieval.recommenders import DEFAULT_MODELS, ModelContext, TrainData, create_recommender
    from retrieval.recommenders.factory import needs_vectors

    cfg = cfg or ABConfig()
    t0 = time.time()
    models = {**{k: dict(v) for k, v in DEFAULT_MODELS.items()}, **cfg.models}
    for name in (cfg.a, cfg.b):
        if name not in models:
            raise ValueError(f"unknown configuration {name!r}; known: {sorted(models)}")
    vectors = (load_item_vectors(catalog, cfg.heads, cfg.item_vectors, cfg.cache_dir)
               if any(needs_vectors(models, n) for n in (cfg.a, cfg.b)) else None)
    ctx = ModelContext.from_catalog(catalog, vectors)
    split = leave_last_out(purchases(catalog), cfg.mode, cfg.min_train)
    data = TrainData.build(split.train, catalog.ids)
    users = split.users
    keys = M.tie_keys(len(catalog), cfg.seed)

    def build(name: str):
        return create_recommender(name, models, ctx)

    ranks = {}
    for arm, name in (("a", cfg.a), ("b", cfg.b)):
        if arm == "b" and name == cfg.a:
            ranks["b"] = ranks["a"].copy()
        else:
            ranks[arm] = _rankings(build(name).fit(data), users, cfg.k, keys)
    if cfg.b_perturb:
        ranks["b"] = perturb(ranks["b"], cfg.b_perturb, len(catalog), np.random.default_rng(cfg.seed + 7))
    targets = [{data.index[x] for x in split.test[u]} for u in users]
    groups = np.array(catalog.groups(), dtype=object)
    res = simulate(ranks["a"], ranks["b"], targets, groups, cfg.sessions, cfg.click, cfg.bootstrap, cfg.alpha, cfg.power, cfg.seed)
    res.update({"data": data_path, "a": cfg.a, "b": cfg.b + (f" (perturbed {cfg.b_perturb:g})" if cfg.b_perturb else ""),
                "split": split.summary(), "wall_s": round(time.time() - t0, 1)})
    return res
