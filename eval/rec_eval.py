"""`whyrec eval rec`: offline evaluation of the recommenders the service can serve, by name.

The models come from a `recommend:` config section (retrieval.recommenders.factory), built by the
same factory the service uses, so the served model (`recommend.model`) is measured exactly as
served. For each split (eval.splits: `basket` leak-free headline, `week` the H&M competition's
protocol, `item` the leaky comparison) every model scores the whole catalog for each held-out
shopper; metrics come from exact ranks, in two tables: with the shopper's already-bought items
left in the ranking, and with them removed (a removed test item counts as a miss, so the tables
compare). Each model is compared with the best single model of its table by a paired bootstrap
(difference and ratio of mean NDCG@10). For the learned ranker: candidate recall per source,
training time and feature importance.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from eval import metrics as M
from eval.splits import PROTOCOL, Split, make_splits, purchases
from retrieval.catalog import Catalog
from retrieval.config import load_yaml, section
from retrieval.recommenders import Ranker, RecommendConfig, TrainData, create_recommender, drop_unbuildable
from retrieval.recommenders.factory import DEFAULT_MODELS, SIMPLE_KINDS
from retrieval.recommenders.serve import load_context

log = logging.getLogger(__name__)

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
MAIN_COLUMNS = ("recall@10", "ndcg@10", "map@12", "auc")


@dataclass
class RecEvalConfig:
    """`eval_rec:` section. The models are those of `recommend_config`'s `recommend:` section."""

    recommend_config: str | None = None  # YAML with the served `recommend:` section (None: built-in defaults)
    recommend: dict | None = None  # keys laid over that section (ablations: recommend.models.tfidf.half_life_days)
    models: list[str] | None = None  # evaluate only these model names (None: all)
    item_vectors: str | None = None  # override recommend.item_vectors (index | towers | FILE.npy | none)
    modes: list[str] = field(default_factory=lambda: ["basket", "week", "item"])
    weeks: int = 4  # week protocol: consecutive weekly cuts, pooled
    exclude_bought: list[bool] = field(default_factory=lambda: [False, True])
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 50, 100])
    candidate_ks: list[int] = field(default_factory=lambda: [10, 50])
    few_purchases: int = 3
    min_train: int = 1
    max_users: int | None = None  # evaluate a seeded sample of shoppers per split (quick runs)
    bootstrap: int = 1000
    sampled_negatives: int = 100  # the sampled-AUC variant
    latency_users: int = 30  # shoppers scored one at a time to time each model
    score_batch: int = 1024  # shoppers scored at once (fewer on big catalogs: eval.metrics.score_batch_rows), never all x items
    seed: int = 0
    threads: int = 1

    def __post_init__(self):
        if not self.modes or set(self.modes) - {"item", "basket", "week"}:
            raise ValueError("eval_rec.modes must be a non-empty subset of [basket, week, item]")
        if 10 not in self.ks:
            self.ks = sorted(set(self.ks) | {10})


def recommend_section(cfg: RecEvalConfig) -> RecommendConfig:
    """The `recommend:` section evaluated (the served one when `recommend_config` names the serve YAML):
    defaults, replaced key by key by the file's section, then `cfg.recommend` laid over it key by key."""
    raw = load_yaml(cfg.recommend_config) if cfg.recommend_config else {}
    data = {"models": {k: dict(v) for k, v in DEFAULT_MODELS.items()}}
    data.update(raw.get("recommend") or {})
    data = _deep_update(data, cfg.recommend or {})
    if not cfg.recommend_config and data.get("item_vectors", "index") == "index" and cfg.item_vectors is None:
        log.warning("no serve config (recommend_config): no index for the content model; it is left out")
        data["item_vectors"] = None
    rc = section({"recommend": data}, "recommend", RecommendConfig)
    if cfg.item_vectors is not None:
        rc.item_vectors = None if cfg.item_vectors in ("none", "null", "") else cfg.item_vectors
    return rc


def _deep_update(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _deep_update(dict(base.get(k) or {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def serving_index(cfg: RecEvalConfig, rc: RecommendConfig):
    """The serving config's index (for item_vectors: index), or None."""
    if rc.item_vectors != "index":
        return None
    if not cfg.recommend_config:
        raise ValueError("recommend.item_vectors is 'index': give recommend_config (the serve YAML with an index: section) "
                         "or item_vectors towers|none|FILE.npy")
    from retrieval.index import open_index
    from retrieval.search import IndexConfig

    icfg = section(load_yaml(cfg.recommend_config), "index", IndexConfig)
    if not Path(icfg.dir).exists():
        raise FileNotFoundError(f"index {icfg.dir} (from {cfg.recommend_config}) not found; build it or set item_vectors")
    return open_index(icfg.dir, icfg.params)


def load_item_vectors(catalog: Catalog, heads: str | None = None, item_vectors: str | None = None,
                      cache_dir: str = "var/cache/features", mode: str = "fusion", image_weight: float = 0.5) -> np.ndarray | None:
    """Item vectors in catalog order from a .npy file (with FILE.ids.txt to align) or lit heads (None: neither)."""
    if item_vectors:
        path = Path(item_vectors)
        if not path.exists():
            raise FileNotFoundError(f"item vectors {path} not found")
        vecs = np.load(path)
        ids_file = path.with_suffix(".ids.txt")
        if ids_file.exists():
            pos = {x: i for i, x in enumerate(ids_file.read_text().split())}
            missing = [x for x in catalog.ids if x not in pos]
            if missing:
                raise ValueError(f"{ids_file} lacks {len(missing)} catalog items (e.g. {missing[0]})")
            vecs = vecs[[pos[x] for x in catalog.ids]]
        if len(vecs) != len(catalog):
            raise ValueError(f"{path}: {len(vecs)} vectors for {len(catalog)} items (add {ids_file.name} to align them)")
        return np.asarray(vecs, np.float32)
    if heads:
        from retrieval.encoders.base import ItemVectorConfig, item_vectors as encode_items
        from retrieval.encoders.lit import LitEncoder

        return encode_items(LitEncoder(heads, cache_dir=cache_dir, threads=1), catalog, ItemVectorConfig(mode, image_weight))
    return None


# ----------------------------------------------------------------------------- metrics
def map_at_k(ranks: list[float], n_relevant: int, k: int = 12) -> float:
    """The H&M competition's MAP@k for one shopper: precision at each hit within k, over min(relevant, k)."""
    hits = [r for r in sorted(ranks) if r <= k]
    return sum((i + 1) / r for i, r in enumerate(hits)) / min(n_relevant, k) if n_relevant else 0.0


def slice_masks(catalog: Catalog, split: Split, data: TrainData, users: list[str], few: int) -> dict[str, np.ndarray]:
    """Per-shopper membership of each slice (a shopper is in a slice if any of their test items is)."""
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


def _dense_row(m: sp.csr_matrix, r: int) -> np.ndarray:
    """Row r of a sparse bool matrix as a dense bool vector (one shopper at a time)."""
    row = np.zeros(m.shape[1], bool)
    row[m.indices[m.indptr[r]:m.indptr[r + 1]]] = True
    return row


def per_user_metrics(S: np.ndarray, targets: list[list[int]], keys: np.ndarray, excluded: sp.csr_matrix | None,
                     ks: list[int], n_neg: int, seed: int, offset: int = 0) -> tuple[list[str], np.ndarray]:
    """(metric names, (shoppers, metrics) matrix) of one model's scores; `excluded`: sparse
    (shoppers x items) items not to rank (their purchases)."""
    names: list[str] | None = None
    rows = []
    for r, t in enumerate(targets):
        ex = None if excluded is None else _dense_row(excluded, r)
        ranks, n_cand = M.ranks_of(S[r], t, keys, ex)
        vals = M.ranking_metrics(ranks, n_cand, ks)
        vals["map@12"] = map_at_k(ranks, len(t), 12)
        # same negatives for every model (seeded by shopper row): a paired comparison
        for name, v in M.sampled_metrics(S[r], t, keys, n_neg, np.random.default_rng([seed, offset + r]), ex).items():
            vals[f"{name}_sampled{n_neg}"] = v
        if names is None:
            names = list(vals)
        rows.append([vals[n] for n in names])
    return names or [], np.asarray(rows, np.float64)


def ratio_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int, alpha: float = 0.05) -> dict:
    """mean(a) / mean(b) with a paired percentile bootstrap interval (same resampled shoppers)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n_boot, len(a)))
    num, den = a[idx].mean(1), b[idx].mean(1)
    ratios = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    point = a.mean() / b.mean() if b.mean() > 0 else float("nan")
    lo, hi = np.nanpercentile(ratios, [100 * alpha / 2, 100 * (1 - alpha / 2)]) if np.isfinite(ratios).any() else (np.nan, np.nan)
    return {"mean": float(point), "low": float(lo), "high": float(hi), "n": int(len(a))}


def prediction_days(split: Split, users: list[str]) -> dict[str, float]:
    """The day each shopper's recommendation is asked for: the week's first day, or the held-out basket's day."""
    from retrieval.recommenders.data import to_days

    if split.cut is not None:
        d = float(to_days([split.cut + pd.Timedelta(days=1)])[0])
        return {u: d for u in users}
    days = to_days([split.test_time[u] for u in users])
    return {u: float(d) for u, d in zip(users, days)}


def _sample_users(users: list[str], n: int | None, seed: int) -> list[str]:
    if n is None or n >= len(users):
        return users
    rng = np.random.default_rng(seed)
    return [users[i] for i in sorted(rng.choice(len(users), n, replace=False))]


def _latency_ms(model, histories, n: int) -> list[float]:
    out = []
    for h in histories[:n]:
        t = time.perf_counter()
        model.score_histories([h])
        out.append((time.perf_counter() - t) * 1000)
    return out


def candidate_recall(ranker: Ranker, histories, targets: list[list[int]], ks: list[int]) -> dict:
    """Share of held-out items among each source's top-K (its configured K and `ks`), and the union's."""
    cands = [c for s in range(0, len(histories), 1024) for c in ranker.candidates(histories[s:s + 1024])]
    out: dict[str, dict[str, float]] = {}
    for src, n in ranker.n_cand.items():
        row = {}
        for k in sorted({k for k in ks if k < n} | {n}):
            row[f"recall@{k}"] = float(np.mean([len(set(c[src][:k].tolist()) & set(t)) / len(t) for c, t in zip(cands, targets)]))
        out[src] = row
    union = [set(np.concatenate(list(c.values())).tolist()) for c in cands]
    out["union"] = {"recall": float(np.mean([len(u & set(t)) / len(t) for u, t in zip(union, targets)])),
                    "mean_candidates": float(np.mean([len(u) for u in union]))}
    return out


# ----------------------------------------------------------------------------- the evaluation
def evaluate_recommenders(catalog: Catalog, cfg: RecEvalConfig | None = None, data_path: str = "",
                          rc: RecommendConfig | None = None, index=None) -> dict:
    """Every model of the `recommend:` section on every split; tables (JSON-ready) with intervals."""
    cfg = cfg or RecEvalConfig()
    rc = rc or recommend_section(cfg)
    t_all = time.time()
    frame = purchases(catalog, rc.merge_same_day)
    if frame.empty:
        raise ValueError("the catalog has no purchases to evaluate recommendations on")
    t = time.time()
    if index is None:
        index = serving_index(cfg, rc)
    ctx = load_context(catalog, rc, index)
    vectors_s = round(time.time() - t, 1)
    specs = drop_unbuildable(rc.models, ctx)
    names = [n for n in (cfg.models or list(rc.models)) if n in specs]
    unknown = set(cfg.models or []) - set(rc.models)
    if unknown:
        raise ValueError(f"unknown model(s) {sorted(unknown)}; the config has {sorted(rc.models)}")
    if not names:
        raise ValueError("no model to evaluate (content models need item vectors)")
    single = [n for n in names if specs[n].get("kind", n) in SIMPLE_KINDS]
    keys = M.tie_keys(len(catalog), cfg.seed)
    result: dict[str, Any] = {"data": data_path, "items": len(catalog), "purchases_merged": len(frame),
                              "purchase_lines": len(catalog.interactions), "served_model": rc.model, "item_vectors": rc.item_vectors,
                              "item_vectors_s": vectors_s, "config": asdict(cfg), "recommend": asdict(rc), "slices": SLICE_HELP,
                              "modes": {}}
    for mode in cfg.modes:
        t_mode = time.time()
        splits = make_splits(frame, mode, cfg.min_train, cfg.weeks)
        per_model: dict[bool, dict[str, list[np.ndarray]]] = {e: {n: [] for n in names} for e in cfg.exclude_bought}
        masks_parts: list[dict[str, np.ndarray]] = []
        timing: dict[str, dict] = {n: {"fit_s": 0.0, "score_all_s": 0.0, "latency_ms": []} for n in names}
        ranker_info: dict[str, Any] = {}
        metric_names: list[str] = []
        n_users = n_items = offset = 0
        for si, split in enumerate(splits):
            users = _sample_users(split.users, cfg.max_users, cfg.seed + si)
            if not users:
                continue
            data = TrainData.build(split.train, catalog.ids)
            hists = data.histories(users, prediction_days(split, users))
            targets = [[data.index[x] for x in split.test[u]] for u in users]
            n_users += len(users)
            n_items += sum(len(t) for t in targets)
            masks_parts.append(slice_masks(catalog, split, data, users, cfg.few_purchases))
            excluded = {e: (data.bought_mask(users) if e else None) for e in cfg.exclude_bought}
            for name in names:
                t = time.time()
                model = create_recommender(name, specs, ctx).fit(data)
                timing[name]["fit_s"] += time.time() - t
                parts: dict[bool, list[np.ndarray]] = {e: [] for e in cfg.exclude_bought}
                step = M.score_batch_rows(len(catalog), cfg.score_batch)
                for b in range(0, len(users), step):  # (batch x items) scores at a time
                    t = time.time()
                    S = model.score_histories(hists[b:b + step])
                    timing[name]["score_all_s"] += time.time() - t
                    for e in cfg.exclude_bought:
                        ex = None if excluded[e] is None else excluded[e][b:b + step]
                        metric_names, vals = per_user_metrics(S, targets[b:b + step], keys, ex, cfg.ks,
                                                              cfg.sampled_negatives, cfg.seed, offset + b)
                        parts[e].append(vals)
                for e in cfg.exclude_bought:
                    per_model[e][name].append(np.concatenate(parts[e]))
                if si == 0:
                    timing[name]["latency_ms"] = _latency_ms(model, hists, cfg.latency_users)
                if isinstance(model, Ranker):
                    info = ranker_info.setdefault(name, {"splits": []})
                    info["splits"].append({"split": split.name, **model.info,
                                           "candidate_recall": candidate_recall(model, hists, targets, cfg.candidate_ks)})
                log.info("%s/%s/%s: fit %.1fs", mode, split.name, name, timing[name]["fit_s"])
                del S
            offset += len(users)
        if not n_users:
            log.warning("split %s has no shopper to evaluate", mode)
            continue
        masks = {s: np.concatenate([m[s] for m in masks_parts]) for s in SLICES}
        tables = {}
        for e in cfg.exclude_bought:
            vals = {n: np.concatenate(v) for n, v in per_model[e].items()}
            j = metric_names.index("ndcg@10")
            table: dict[str, Any] = {"slices": {}}
            for s, mask in masks.items():
                entry = {"n": int(mask.sum()), "models": {}}
                for name, v in vals.items():
                    ests = M.bootstrap_columns(v[mask], cfg.bootstrap, seed=cfg.seed)
                    entry["models"][name] = {n: est.to_dict() for n, est in zip(metric_names, ests)}
                table["slices"][s] = entry
            if single:
                best = max(single, key=lambda n: vals[n][:, j].mean())
                table["best_single"] = best
                table["vs_best"] = {n: {"difference": M.paired_bootstrap_diff(vals[n][:, j], vals[best][:, j], cfg.bootstrap,
                                                                              seed=cfg.seed).to_dict(),
                                        "ratio": ratio_bootstrap(vals[n][:, j], vals[best][:, j], cfg.bootstrap, cfg.seed)}
                                    for n in names if n != best}
            tables[TABLES[e]] = table
        for name, tm in timing.items():
            lat = tm["latency_ms"]
            tm["fit_s"], tm["score_all_s"] = round(tm["fit_s"], 2), round(tm["score_all_s"], 2)
            tm["latency_p50_ms"] = round(float(np.percentile(lat, 50)), 2) if lat else None
            tm["latency_p99_ms"] = round(float(np.percentile(lat, 99)), 2) if lat else None
        result["modes"][mode] = {"split": {"mode": mode, "protocol": PROTOCOL[mode], "splits": [s.summary() for s in splits],
                                           "evaluated_users": n_users, "evaluated_test_items": n_items,
                                           "skipped_users": sum(s.skipped_users for s in splits)},
                                 "timings": timing, "ranker": ranker_info, "tables": tables, "wall_s": round(time.time() - t_mode, 1)}
    result["wall_s"] = round(time.time() - t_all, 1)
    return result


# ----------------------------------------------------------------------------- Markdown
def _fmt(e: dict, digits: int = 3) -> str:
    if e["n"] == 0 or e["mean"] != e["mean"]:
        return "-"
    return f"{e['mean']:.{digits}f} [{e['low']:.{digits}f}, {e['high']:.{digits}f}]"


def rec_markdown(result: dict) -> str:
    """The tables of `evaluate_recommenders` as Markdown (main metrics, comparison with the best single model, slices)."""
    served = result.get("served_model")
    out = [f"# Recommendation evaluation: {result.get('data', '')}", "",
           f"{result['items']} items, {result['purchase_lines']} purchase lines ({result['purchases_merged']} after merging "
           f"same-day units). Served model: `{served}`. Item vectors: {result.get('item_vectors')}. Bootstrap 95% intervals in "
           "brackets; metrics rank the test items against the full catalog.", ""]
    for mode, res in result["modes"].items():
        sp = res["split"]
        out += [f"## Split `{mode}`: {sp['protocol']}", "",
                f"{sp['evaluated_users']} shopper(-week)s, {sp['evaluated_test_items']} test items ({sp['skipped_users']} without "
                f"training history skipped); {res['wall_s']} s", ""]
        for tname, table in res["tables"].items():
            allrows = table["slices"]["all"]["models"]
            best = table.get("best_single")
            out += [f"### {mode} / {tname.replace('_', ' ')} (best single model: {best})", "",
                    "| model | " + " | ".join(MAIN_COLUMNS) + " | NDCG@10 minus best | NDCG@10 / best |", "|---" * (len(MAIN_COLUMNS) + 3) + "|"]
            for mname, mets in allrows.items():
                vs = table.get("vs_best", {}).get(mname)
                diff = _fmt(vs["difference"], 4) if vs else "-"
                ratio = _fmt(vs["ratio"], 2) if vs else "-"
                label = f"**{mname}** (served)" if mname == served else mname
                out.append(f"| {label} | " + " | ".join(_fmt(mets[c]) for c in MAIN_COLUMNS) + f" | {diff} | {ratio} |")
            out += ["", "NDCG@10 by slice (n shoppers):", ""]
            slices = [s for s in table["slices"] if s != "all"]
            out += ["| model | " + " | ".join(f"{s} ({table['slices'][s]['n']})" for s in slices) + " |", "|---" * (len(slices) + 1) + "|"]
            for mname in allrows:
                out.append(f"| {mname} | " + " | ".join(_fmt(table['slices'][s]['models'][mname]['ndcg@10']) for s in slices) + " |")
            out.append("")
        for rname, info in res.get("ranker", {}).items():
            out += [f"ranker `{rname}` per split: training time, candidate recall per source", ""]
            for s in info["splits"]:
                cr = s["candidate_recall"]
                out.append(f"- {s['split']}: fit {s.get('fit_s')} s (LightGBM {s.get('lgbm_fit_s')} s, {s.get('train_groups')} groups), "
                           f"union recall {cr['union']['recall']:.3f} of {cr['union']['mean_candidates']:.0f} candidates; "
                           + "; ".join(f"{src} " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()) for src, r in cr.items() if src != "union"))
            imp = info["splits"][0].get("feature_importance_gain", {})
            out += ["", "top features (gain): " + ", ".join(f"{k} {v:g}" for k, v in list(imp.items())[:12]), ""]
        out += ["timings (s summed over the split's cuts; ms to score one shopper over the whole catalog):", "",
                "| model | fit | score all | p50 ms | p99 ms |", "|---|---|---|---|---|"]
        for mname, t in res["timings"].items():
            out.append(f"| {mname} | {t.get('fit_s')} | {t.get('score_all_s')} | {t.get('latency_p50_ms')} | {t.get('latency_p99_ms')} |")
        out.append("")
    out.append(f"total wall time {result['wall_s']} s")
    return "\n".join(out) + "\n"
