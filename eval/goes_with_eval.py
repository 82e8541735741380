"""`whyrec eval goes-with`: "goes well with" by leave-one-set-out (leave-one-room-out on IKEA).

For every set (a room) and every item in it: the model learns from all the other sets, the item
is hidden, and the rest of the set is the query; the hidden item's rank among all catalog items
(the query's items excepted) gives hit@k and MRR. Each component of the served model is measured
alone, beside the served blend and two baselines: same category, and tf-idf text similarity.
Intervals come from a bootstrap over sets (the items of one room are not independent).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm import tqdm

from retrieval.catalog import Catalog
from retrieval.recommenders import standardise
from retrieval.recommenders.complement import BASELINES, COMPONENTS, GoesWith, GoesWithConfig, basket_sets, read_sets

log = logging.getLogger(__name__)


@dataclass
class GoesWithEvalConfig:
    """`eval_goes_with:` section."""

    sets: str | None = None  # rooms.csv (None: same-day purchase baskets)
    goes_with: dict = field(default_factory=dict)  # GoesWithConfig keys (weights, series_attribute, columns)
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    max_sets: int | None = None  # a seeded sample of sets (quick runs)
    bootstrap: int = 1000
    seed: int = 0


def _rank(scores: np.ndarray, target: int, query: list[int]) -> int:
    s = scores.astype(np.float64).copy()
    s[query] = -np.inf
    return int((s > s[target]).sum() + 1 + ((s == s[target]) & (np.arange(len(s)) < target)).sum())


GRID = (0.0, 0.1, 0.3, 1.0, 3.0)


def select_blend(cases, k: int = 10, rounds: int = 3) -> np.ndarray:
    """Component weights with the best hit@k on `cases`: start from the best single component, then
    change one weight at a time over GRID while hit@k improves."""
    def value(w: np.ndarray) -> float:
        return float(np.mean([_rank(w @ Z.astype(np.float32), t, q) <= k for _, t, q, Z in cases])) if w.any() else -1.0

    n = len(COMPONENTS)
    best = max((np.eye(n)[i] for i in range(n)), key=value)
    best_v = value(best)
    for _ in range(rounds):
        changed = False
        for i in range(n):
            for v in GRID:
                w = best.copy()
                w[i] = v
                val = value(w)
                if val > best_v + 1e-12:
                    best, best_v, changed = w, val, True
        if not changed:
            break
    return best


def evaluate_goes_with(catalog: Catalog, cfg: GoesWithEvalConfig | None = None, data_path: str = "") -> dict:
    from retrieval.config import from_dict

    cfg = cfg or GoesWithEvalConfig()
    gcfg = from_dict(GoesWithConfig, {**cfg.goes_with, "sets": cfg.sets}, "eval_goes_with.goes_with")
    t0 = time.time()
    if cfg.sets:
        sets, source = read_sets(cfg.sets, catalog, gcfg.set_column, gcfg.context_column), "rooms"
    else:
        sets, source = basket_sets(catalog.interactions, len(catalog)), "baskets"
    if len(sets) < 2:
        raise ValueError("leave-one-set-out needs at least two co-occurrence sets")
    order = list(range(len(sets)))
    if cfg.max_sets and cfg.max_sets < len(sets):
        order = sorted(np.random.default_rng(cfg.seed).choice(len(sets), cfg.max_sets, replace=False).tolist())
    model = GoesWith(catalog, gcfg, source)
    methods: tuple[str, ...] = ("served",) + COMPONENTS + BASELINES
    ranks: dict[str, list[list[int]]] = {m: [] for m in methods}  # per set, the ranks of its hidden items
    fold = np.random.default_rng(cfg.seed + 1).integers(0, 2, len(order))
    cases: list[tuple[int, int, list[int], np.ndarray]] = []  # (set position, target, query, z-scored components)
    for si in tqdm(order, desc="leave one set out", unit="set", disable=len(order) < 20):
        model.fit([s for j, s in enumerate(sets) if j != si])
        per = {m: [] for m in methods}
        rows = sets[si].rows.tolist()
        for target in rows:
            query = [r for r in rows if r != target]
            comps = model.components(query)
            comps["served"] = model.score(query, comps)
            for m in methods:
                per[m].append(_rank(comps[m], target, query))
            cases.append((len(ranks["served"]), target, query,
                          np.stack([standardise(comps[c][None, :])[0] for c in COMPONENTS]).astype(np.float16)))
        for m in methods:
            ranks[m].append(per[m])
    # an honest blend: weights chosen on one half of the sets, measured on the other (2-fold)
    ranks["blend_cv"] = [[0] * len(r) for r in ranks["served"]]
    fold_weights = []
    for f in (0, 1):
        train = [c for c in cases if fold[c[0]] != f]
        w = select_blend(train, cfg.ks[-1] if 10 not in cfg.ks else 10)
        fold_weights.append(dict(zip(COMPONENTS, w.tolist())))
        seen: dict[int, int] = {}
        for pos, target, query, Z in (c for c in cases if fold[c[0]] == f):
            j = seen.get(pos, 0)
            seen[pos] = j + 1
            ranks["blend_cv"][pos][j] = _rank(w @ Z.astype(np.float32), target, query)
    methods = methods + ("blend_cv",)
    rng = np.random.default_rng(cfg.seed)
    boot = rng.integers(0, len(order), (cfg.bootstrap, len(order)))
    out: dict = {}
    for m in methods:
        res = {}
        for name, fn in [(f"hit@{k}", (lambda k: lambda r: (np.asarray(r) <= k).astype(float))(k)) for k in cfg.ks] + [("mrr", lambda r: 1.0 / np.asarray(r))]:
            sums = np.array([fn(r).sum() for r in ranks[m]])
            counts = np.array([len(r) for r in ranks[m]], float)
            mean = sums.sum() / counts.sum()
            bs = sums[boot].sum(1) / counts[boot].sum(1)
            lo, hi = np.percentile(bs, [2.5, 97.5])
            res[name] = {"mean": float(mean), "low": float(lo), "high": float(hi), "n": int(counts.sum())}
        out[m] = res
    return {"data": data_path, "source": source, "sets": len(sets), "evaluated_sets": len(order),
            "hidden_items": int(sum(len(r) for r in ranks["served"])), "config": asdict(cfg), "weights": gcfg.weights, "blend_cv_weights": fold_weights,
            "methods": out, "wall_s": round(time.time() - t0, 1)}


def goes_with_rows(result: dict) -> list[dict]:
    return [{"method": m, **{k: v for k, v in r.items()}} for m, r in result["methods"].items()]


def goes_with_metrics(result: dict) -> dict[str, float]:
    out = {"wall_s": result["wall_s"]}
    for m, r in result["methods"].items():
        for k, e in r.items():
            out[f"{m}/{k}"] = e["mean"]
            out[f"{m}/{k}/low"], out[f"{m}/{k}/high"] = e["low"], e["high"]
    return out


def goes_with_markdown(result: dict) -> str:
    ks = [k for k in next(iter(result["methods"].values()))]
    lines = [f"# Goes well with: leave one {'room' if result['source'] == 'rooms' else 'basket'} out ({result['data']})", "",
             f"{result['evaluated_sets']} of {result['sets']} sets, {result['hidden_items']} hidden items; served weights "
             f"{result['weights']}; blend_cv: weights chosen on the other half of the sets {result['blend_cv_weights']}; "
             "95% bootstrap intervals over sets.", "",
             "| method | " + " | ".join(ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for m, r in result["methods"].items():
        lines.append(f"| {m} | " + " | ".join(f"{e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]" for e in r.values()) + " |")
    return "\n".join(lines) + "\n"


def goes_with_summary(result: dict) -> dict:
    return {"source": result["source"], "sets": result["sets"], "hidden_items": result["hidden_items"],
            "hit@10": {m: [round(r["hit@10"][x], 4) for x in ("mean", "low", "high")] for m, r in result["methods"].items() if "hit@10" in r}}
