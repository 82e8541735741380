"""`whyrec eval rec`: offline recommendation evaluation by temporal leave-one-out.

For each split mode (last item, last-day basket) every model scores the whole catalog for each
held-out shopper; metrics come from exact ranks, each with a bootstrap interval, in two tables:
with the shopper's already-bought items left in the ranking, and with them removed (a removed
test item counts as a miss: the population is the same in both tables, so they compare). Slices
show where models differ: few purchases, cold test items, repeat purchases, other colours of a
bought product, items without text. The hybrid's weights are chosen on a validation split (the
same leave-one-out applied to the training rows) separately for each table, and the hybrid is
compared to each single model by a paired bootstrap of the NDCG@10 difference.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval import metrics as M
from eval.recommenders import (Hybrid, ModelContext, Recommender, TrainData, blend, create_recommender, select_weights,
                               standardise)
from eval.splits import Split, leave_last_out, purchases, validation_split
from retrieval.catalog import Catalog, product_text

log = logging.getLogger(__name__)

DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    "popularity": {"kind": "popularity"},
    "pop_recent": {"kind": "popularity", "window_days": 28},
    "repeat": {"kind": "repeat"},
    "tfidf": {"kind": "tfidf"},
    "bpr": {"kind": "bpr"},
    "content": {"kind": "content"},
}
TABLES = {False: "with_bought", True: "without_bought"}
SLICES = ("all", "few_purchases", "cold_item", "repeat", "novel", "other_colour", "no_text")
SLICE_HELP = {
    "all": "every evaluated shopper",
    "few_purchases": "shoppers with at most `few_purchases` training purchases",
    "cold_item": "a test item never bought by anyone in training",
    "repeat": "a test item the shopper bought before (in training)",
    "novel": "no test item bought before by the shopper",
    "other_colour": "a test item not bought before whose product (group_id) the shopper bought in another colour",
    "no_text": "a test item without a description",
}


@dataclass
class HybridConfig:
    components: list[str] = field(default_factory=lambda: ["content", "tfidf", "bpr", "repeat", "pop_recent"])
    search: str = "coordinate"  # coordinate (one weight at a time over `values`) | simplex (grid at `step`)
    values: list[float] = field(default_factory=lambda: [0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0])
    step: float = 0.2  # simplex grid step of the weights
    metric_k: int = 10  # weights maximise validation NDCG@k


@dataclass
class RecEvalConfig:
    """`eval_rec:` section."""

    modes: list[str] = field(default_factory=lambda: ["item", "basket"])
    exclude_bought: list[bool] = field(default_factory=lambda: [False, True])
    models: dict[str, dict] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_MODELS.items()})
    hybrid: HybridConfig | None = field(default_factory=HybridConfig)
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 50])
    few_purchases: int = 3
    min_train: int = 1
    max_users: int | None = None  # evaluate a seeded sample of shoppers (quick runs)
    bootstrap: int = 1000
    sampled_negatives: int = 100  # the sampled-AUC variant
    latency_users: int = 30  # shoppers scored one at a time to time each model
    seed: int = 0
    # content model item vectors: a heads folder (LitEncoder) or a .npy matrix in catalog order
    heads: str | None = None
    item_vectors: str | None = None
    item_vector_mode: str = "fusion"
    image_weight: float = 0.5
    cache_dir: str = "var/cache/features"
    threads: int = 1

    def __post_init__(self):
        if not self.modes or set(self.modes) - {"item", "basket"}:
            raise ValueError("eval_rec.modes must be a non-empty subset of [item, basket]")
        if 10 not in self.ks:
            self.ks = sorted(set(self.ks) | {10})
        if isinstance(self.hybrid, dict):
            from retrieval.config import from_dict

            self.hybrid = from_dict(HybridConfig, self.hybrid, "eval_rec.hybrid")


# ----------------------------------------------------------------------------- item vectors
def load_item_vectors(catalog: Catalog, cfg: RecEvalConfig) -> np.ndarray | None:
    """Item vectors for the content model, in catalog order (None: the content model is skipped)."""
    if cfg.item_vectors:
        path = Path(cfg.item_vectors)
        if not path.exists():
            raise FileNotFoundError(f"item vectors {path} not found")
        vecs = np.load(path)
        ids_file = path.with_suffix(".ids.txt")
        if ids_file.exists():
            ids = ids_file.read_text().split()
            pos = {x: i for i, x in enumerate(ids)}
            missing = [x for x in catalog.ids if x not in pos]
            if missing:
                raise ValueError(f"{ids_file} lacks {len(missing)} catalog items (e.g. {missing[0]})")
            vecs = vecs[[pos[x] for x in catalog.ids]]
        if len(vecs) != len(catalog):
            raise ValueError(f"{path}: {len(vecs)} vectors for {len(catalog)} items (add {ids_file.name} to align them)")
        return np.asarray(vecs, np.float32)
    if cfg.heads:
        from retrieval.encoders.base import ItemVectorConfig, item_vectors
        from retrieval.encoders.lit import LitEncoder

        enc = LitEncoder(cfg.heads, cache_dir=cfg.cache_dir, threads=max(1, cfg.threads))
        return item_vectors(enc, catalog, ItemVectorConfig(cfg.item_vector_mode, cfg.image_weight))
    return None


# ----------------------------------------------------------------------------- slices
def slice_masks(catalog: Catalog, split: Split, data: TrainData, users: list[str], few: int) -> dict[str, np.ndarray]:
    """Per-shopper membership of each slice (basket mode: a shopper is in a slice if any test item is)."""
    trained = set(data.rows_item.tolist())
    masks = {s: np.zeros(len(users), bool) for s in SLICES}
    for r, u in enumerate(users):
        hist = data.history(u)[0]
        own = set(hist.tolist())
        groups = {catalog.products[i].group_id or catalog.products[i].id for i in own}
        tests = [data.index[x] for x in split.test[u]]
        masks["all"][r] = True
        masks["few_purchases"][r] = len(hist) <= few
        masks["cold_item"][r] = any(t not in trained for t in tests)
        masks["repeat"][r] = any(t in own for t in tests)
        masks["novel"][r] = not masks["repeat"][r]
        masks["other_colour"][r] = any(t not in own and (catalog.products[t].group_id or catalog.products[t].id) in groups for t in tests)
        masks["no_text"][r] = any(not catalog.products[t].description.strip() for t in tests)
    return masks


# ----------------------------------------------------------------------------- per-shopper metrics
def per_user_metrics(S: np.ndarray, targets: list[list[int]], keys: np.ndarray, excluded: np.ndarray | None,
                     ks: list[int], n_neg: int, seed: int) -> tuple[list[str], np.ndarray]:
    """(metric names, (shoppers, metrics) matrix) of one model's scores."""
    names: list[str] | None = None
    rows = []
    for r, t in enumerate(targets):
        ex = None if excluded is None else excluded[r]
        ranks, n_cand = M.ranks_of(S[r], t, keys, ex)
        vals = M.ranking_metrics(ranks, n_cand, ks)
        # same negatives for every model (seeded by shopper row): a paired comparison
        for name, v in M.sampled_metrics(S[r], t, keys, n_neg, np.random.default_rng([seed, r]), ex).items():
            vals[f"{name}_sampled{n_neg}"] = v
        if names is None:
            names = list(vals)
        rows.append([vals[n] for n in names])
    return names or [], np.asarray(rows, np.float64)


def _targets(split: Split, data: TrainData, users: list[str]) -> list[list[int]]:
    return [[data.index[x] for x in split.test[u]] for u in users]


def _sample_users(users: list[str], n: int | None, seed: int) -> list[str]:
    if n is None or n >= len(users):
        return users
    rng = np.random.default_rng(seed)
    return [users[i] for i in sorted(rng.choice(len(users), n, replace=False))]


def _latency_ms(model: Recommender, users: list[str], n: int) -> list[float]:
    out = []
    for u in users[:n]:
        t = time.perf_counter()
        model.score([u])
        out.append((time.perf_counter() - t) * 1000)
    return out


# ----------------------------------------------------------------------------- the evaluation
def evaluate_recommenders(catalog: Catalog, cfg: RecEvalConfig | None = None, data_path: str = "") -> dict:
    """Run every model on every split mode; return tables (JSON-ready) with intervals and timings."""
    cfg = cfg or RecEvalConfig()
    t_all = time.time()
    frame = purchases(catalog)
    if frame.empty:
        raise ValueError("the catalog has no purchases to evaluate recommendations on")
    t = time.time()
    vectors = load_item_vectors(catalog, cfg)
    vectors_s = round(time.time() - t, 1)
    ctx = ModelContext([product_text(p) for p in catalog.products], vectors)
    model_specs = dict(cfg.models)
    if vectors is None and any(s.get("kind") == "content" for s in model_specs.values()):
        log.warning("no item vectors (--heads / --item-vectors): the content model is skipped")
        model_specs = {k: v for k, v in model_specs.items() if v.get("kind") != "content"}
    keys = M.tie_keys(len(catalog), cfg.seed)
    result: dict[str, Any] = {"data": data_path, "items": len(catalog), "purchases": len(frame), "item_vectors_s": vectors_s,
                              "config": asdict(cfg), "slices": SLICE_HELP, "modes": {}}
    for mode in cfg.modes:
        t_mode = time.time()
        split = leave_last_out(frame, mode, cfg.min_train)
        users = _sample_users(split.users, cfg.max_users, cfg.seed)
        data = TrainData.build(split.train, catalog.ids)
        targets = _targets(split, data, users)
        scores: dict[str, np.ndarray] = {}
        fitted: dict[str, Recommender] = {}
        timing: dict[str, dict] = {}
        for name, spec in model_specs.items():
            spec = dict(spec)
            kind = spec.pop("kind", name)
            t = time.time()
            model = create_recommender(kind, ctx, **spec).fit(data)
            t_fit = time.time() - t
            t = time.time()
            scores[name] = model.score(users)
            timing[name] = {"fit_s": round(t_fit, 2), "score_all_s": round(time.time() - t, 2),
                            "latency_ms": _latency_ms(model, users, cfg.latency_users)}
            fitted[name] = model
            log.info("%s/%s: fit %.1fs, scored %d shoppers in %.1fs", mode, name, t_fit, len(users), timing[name]["score_all_s"])

        weights: dict[bool, dict] = {}
        hybrid_info: dict[str, Any] = {}
        comps = [c for c in (cfg.hybrid.components if cfg.hybrid else []) if c in model_specs]
        if cfg.hybrid and len(comps) >= 2:
            t = time.time()
            val = validation_split(split, cfg.min_train)
            vusers = _sample_users(val.users, cfg.max_users, cfg.seed + 1)
            vdata = TrainData.build(val.train, catalog.ids)
            vtargets = _targets(val, vdata, vusers)
            vstd = {}
            for c in comps:
                spec = dict(model_specs[c])
                kind = spec.pop("kind", c)
                vstd[c] = standardise(create_recommender(kind, ctx, **spec).fit(vdata).score(vusers))
            for excl in cfg.exclude_bought:
                w, grid = select_weights(vstd, vtargets, keys, vdata.bought_mask(vusers) if excl else None, cfg.hybrid.step,
                                         cfg.hybrid.metric_k, cfg.hybrid.search, cfg.hybrid.values)
                weights[excl] = w
                hybrid_info[TABLES[excl]] = {"weights": w, "validation_ndcg": max(g[f"ndcg@{cfg.hybrid.metric_k}"] for g in grid),
                                             "grid": grid}
            del vstd
            hybrid_info["select_s"] = round(time.time() - t, 1)
            hybrid_info["validation_users"] = len(vusers)
            test_std = {c: standardise(scores[c]) for c in comps}
        elif cfg.hybrid:
            log.warning("hybrid needs at least two of its components %s among the models; skipped", cfg.hybrid.components)

        masks = slice_masks(catalog, split, data, users, cfg.few_purchases)
        tables = {}
        for excl in cfg.exclude_bought:
            excluded = data.bought_mask(users) if excl else None
            model_scores = dict(scores)
            if excl in weights:
                t = time.time()
                model_scores["hybrid"] = blend(test_std, weights[excl])
                hyb = Hybrid(fitted, weights[excl])
                timing.setdefault("hybrid", {"fit_s": round(hybrid_info["select_s"], 2)})
                timing["hybrid"]["score_all_s"] = round(time.time() - t + sum(timing[c]["score_all_s"] for c in comps), 2)
                timing["hybrid"]["latency_ms"] = _latency_ms(hyb, users, cfg.latency_users)
            per_model = {}
            names: list[str] = []
            for name, S in model_scores.items():
                names, per_model[name] = per_user_metrics(S, targets, keys, excluded, cfg.ks, cfg.sampled_negatives, cfg.seed)
            table: dict[str, Any] = {"slices": {}}
            for s, mask in masks.items():
                entry = {"n": int(mask.sum()), "models": {}}
                for name, vals in per_model.items():
                    ests = M.bootstrap_columns(vals[mask], cfg.bootstrap, seed=cfg.seed)
                    entry["models"][name] = {n: e.to_dict() for n, e in zip(names, ests)}
                table["slices"][s] = entry
            if "hybrid" in per_model:
                j = names.index("ndcg@10")
                table["hybrid_vs"] = {
                    name: M.paired_bootstrap_diff(per_model["hybrid"][:, j], vals[:, j], cfg.bootstrap, seed=cfg.seed).to_dict()
                    for name, vals in per_model.items() if name != "hybrid"}
            tables[TABLES[excl]] = table
        for name in timing:
            lat = timing[name].get("latency_ms", [])
            timing[name]["latency_p50_ms"] = round(float(np.percentile(lat, 50)), 2) if lat else None
        result["modes"][mode] = {"split": {**split.summary(), "evaluated_users": len(users),
                                           "evaluated_test_items": sum(len(t) for t in targets)}, "timings": timing,
                                 "hybrid": hybrid_info, "tables": tables, "wall_s": round(time.time() - t_mode, 1)}
        del scores
    result["wall_s"] = round(time.time() - t_all, 1)
    return result


# ----------------------------------------------------------------------------- Markdown
MAIN_COLUMNS = ("recall@10", "ndcg@10", "mrr", "auc")


def _fmt(e: dict, digits: int = 3) -> str:
    if e["n"] == 0 or e["mean"] != e["mean"]:
        return "-"
    return f"{e['mean']:.{digits}f} [{e['low']:.{digits}f}, {e['high']:.{digits}f}]"


def rec_markdown(result: dict) -> str:
    """The tables of `evaluate_recommenders` as Markdown (main metrics, slices, hybrid differences)."""
    out = [f"# Recommendation evaluation: {result.get('data', '')}", "",
           f"{result['items']} items, {result['purchases']} purchases. Bootstrap 95% intervals in brackets; "
           "Metrics rank the test item against the full catalog; `*_sampledN` against N random negatives instead "
           "(uniform sampled AUC estimates the full AUC; sampled hit/NDCG are inflated and shown only for comparison with papers "
           "that use them).", ""]
    for mode, res in result["modes"].items():
        sp = res["split"]
        out += [f"## Split `{mode}`: {sp['evaluated_users']} shoppers, {sp['evaluated_test_items']} test items "
                f"({sp['skipped_users']} shoppers without training history skipped); {res['wall_s']} s", ""]
        for tname, table in res["tables"].items():
            allrows = table["slices"]["all"]["models"]
            models = list(allrows)
            ns = [c for c in next(iter(allrows.values())) if "_sampled" in c]
            cols = list(MAIN_COLUMNS) + ns
            w = res["hybrid"].get(tname, {}).get("weights")
            out += [f"### {mode} / {tname.replace('_', ' ')}", ""]
            if w:
                out += ["hybrid weights (chosen on validation): " + ", ".join(f"{k} {v:g}" for k, v in w.items() if v), ""]
            out += ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
            for mname in models:
                out.append(f"| {mname} | " + " | ".join(_fmt(allrows[mname][c]) for c in cols) + " |")
            out += ["", "NDCG@10 by slice (n shoppers):", ""]
            slices = [s for s in table["slices"] if s != "all"]
            out += ["| model | " + " | ".join(f"{s} ({table['slices'][s]['n']})" for s in slices) + " |",
                    "|---" * (len(slices) + 1) + "|"]
            for mname in models:
                out.append(f"| {mname} | " + " | ".join(_fmt(table['slices'][s]['models'][mname]['ndcg@10']) for s in slices) + " |")
            if "hybrid_vs" in table:
                out += ["", "hybrid minus model, NDCG@10 (paired bootstrap):", "",
                        "| model | difference | hybrid better beyond the interval? |", "|---|---|---|"]
                for mname, d in table["hybrid_vs"].items():
                    out.append(f"| {mname} | {_fmt(d)} | {'yes' if d['low'] > 0 else 'no'} |")
            out.append("")
        out += ["timings (s, and p50 ms to score one shopper over the whole catalog):", "",
                "| model | fit | score all | latency p50 ms |", "|---|---|---|---|"]
        for mname, t in res["timings"].items():
            out.append(f"| {mname} | {t.get('fit_s')} | {t.get('score_all_s')} | {t.get('latency_p50_ms')} |")
        out.append("")
    out.append(f"total wall time {result['wall_s']} s")
    return "\n".join(out) + "\n"
