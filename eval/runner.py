"""The four evaluations behind one interface, shared by `whyrec eval ...` and `whyrec ablate`.

Each `Evaluation` knows its config dataclass (and YAML section), how to run from a data path,
how to flatten its result into MLflow metrics, which rows go into an ablation's Markdown table,
which PNG plots to draw, and how to print a compact JSON summary.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from eval.ab import ABConfig, run_ab
from eval.explain_eval import (DEFAULT_CHECKER, evaluate_explanations, explain_markdown, generate_explanations, load_checker,
                               read_jsonl, references_from_instructions)
from eval.goes_with_eval import (GoesWithEvalConfig, evaluate_goes_with, goes_with_markdown, goes_with_metrics, goes_with_rows,
                                 goes_with_summary)
from eval.rec_eval import MAIN_COLUMNS, RecEvalConfig, evaluate_recommenders, rec_markdown
from eval.retrieval_eval import RetrievalEvalConfig, evaluate_retrieval, held_out_ids, retrieval_markdown
from retrieval.artifacts import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Lay out, write as PNG and close a figure (an open figure keeps its memory)."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def _k_of(name: str) -> int:
    return int(name.split("@")[1])


def rec_plots(result: dict, out: Path) -> list[Path]:
    """Recall@K curves (one panel per table) and per-shopper scoring latency histograms, per split mode."""
    plt = _plt()
    files = []
    for mode, res in result["modes"].items():
        tables = res["tables"]
        fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 4.5), squeeze=False)
        for ax, (tname, table) in zip(axes[0], tables.items()):
            for model, mets in table["slices"]["all"]["models"].items():
                ks = sorted(_k_of(m) for m in mets if m.startswith("recall@"))
                y = [mets[f"recall@{k}"]["mean"] for k in ks]
                lo = [mets[f"recall@{k}"]["low"] for k in ks]
                hi = [mets[f"recall@{k}"]["high"] for k in ks]
                ax.plot(ks, y, marker="o", label=model)
                ax.fill_between(ks, lo, hi, alpha=0.15)
            ax.set_xscale("log")
            ax.set_xlabel("K")
            ax.set_ylabel("Recall@K")
            ax.set_title(f"{mode} split, {tname.replace('_', ' ')}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        files.append(_save(fig, out / f"recall_at_k_{mode}.png"))
        lat = {m: t["latency_ms"] for m, t in res["timings"].items() if t.get("latency_ms")}
        if lat:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            top = max(max(v) for v in lat.values())
            low = max(min(min(v) for v in lat.values()), 1e-3)
            bins = np.logspace(np.log10(low), np.log10(top * 1.01), 30)
            for m, v in lat.items():
                ax.hist(v, bins=bins, alpha=0.5, label=f"{m} (p50 {np.median(v):.3g} ms)")
            ax.set_xscale("log")
            ax.set_xlabel("ms to score one shopper over the whole catalog")
            ax.set_ylabel("shoppers")
            ax.set_title(f"scoring latency, {mode} split")
            ax.legend(fontsize=8)
            files.append(_save(fig, out / f"latency_{mode}.png"))
    return files


def retrieval_plots(result: dict, out: Path) -> list[Path]:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for task, t in result["tasks"].items():
        ks = sorted(_k_of(m) for m in t if m.startswith("r@"))
        ax.plot(ks, [t[f"r@{k}"]["mean"] for k in ks], marker="o", label=task)
        ax.fill_between(ks, [t[f"r@{k}"]["low"] for k in ks], [t[f"r@{k}"]["high"] for k in ks], alpha=0.15)
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_title(f"retrieval: {result.get('query_items', '')} queries, gallery of {result['gallery_items']} items")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [_save(fig, out / "retrieval_recall_at_k.png")]


def explain_plots(result: dict, out: Path) -> list[Path]:
    plt = _plt()
    cols = [c for c in ("grounding_precision", "hallucination_rate", "bleu4", "rougeL", "unique_sentence_ratio", "feature_match_ratio")
            if any(c in r for r in result.values())]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(result), 1)
    for i, (backend, r) in enumerate(result.items()):
        vals = [r[c]["mean"] if isinstance(r.get(c), dict) else (r.get(c) if r.get(c) == r.get(c) else 0) or 0 for c in cols]
        ax.bar(np.arange(len(cols)) + i * width, vals, width, label=backend)
    ax.set_xticks(np.arange(len(cols)) + width * (len(result) - 1) / 2, cols, rotation=20, fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("explanations by backend")
    return [_save(fig, out / "explain_metrics.png")]


def ab_plots(result: dict, out: Path) -> list[Path]:
    plt = _plt()
    ab, it = result["ab_split"], result["interleaving"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    ctr = [ab["ctr_a"], ab["ctr_b"]]
    axes[0].bar(["A: " + result.get("a", ""), "B: " + result.get("b", "")], [c["mean"] for c in ctr],
                yerr=[[c["mean"] - c["low"] for c in ctr], [c["high"] - c["mean"] for c in ctr]], capsize=6)
    axes[0].set_ylabel("sessions with a click")
    axes[0].set_title("A/B split")
    d = [ab["lift"], it["delta"]]
    axes[1].errorbar([0, 1], [x["mean"] for x in d], yerr=[[x["mean"] - x["low"] for x in d], [x["high"] - x["mean"] for x in d]],
                     fmt="o", capsize=6)
    axes[1].axhline(0, color="grey", lw=1)
    axes[1].set_xticks([0, 1], ["A/B lift (B - A)", "interleaving delta"])
    axes[1].set_xlim(-0.5, 1.5)
    axes[1].set_title("B vs A, 95% bootstrap interval")
    return [_save(fig, out / "ab_lift.png")]


# ----------------------------------------------------------------------------- metrics and rows
def _est_metrics(prefix: str, est: dict, bounds: bool = True) -> dict[str, float]:
    out = {prefix: est["mean"]}
    if bounds:
        out[prefix + "/low"], out[prefix + "/high"] = est["low"], est["high"]
    return out


def rec_metrics(result: dict) -> dict[str, float]:
    out: dict[str, float] = {"wall_s": result["wall_s"]}
    for mode, res in result["modes"].items():
        for tname, table in res["tables"].items():
            for s, entry in table["slices"].items():
                for model, mets in entry["models"].items():
                    for m, est in mets.items():
                        if s == "all":
                            out.update(_est_metrics(f"{mode}/{tname}/{model}/{m}", est, m in MAIN_COLUMNS))
                        elif m in ("recall@10", "ndcg@10"):
                            out[f"{mode}/{tname}/{s}/{model}/{m}"] = est["mean"]
            for model, d in table.get("vs_best", {}).items():
                out.update(_est_metrics(f"{mode}/{tname}/{model}_minus_best/ndcg@10", d["difference"]))
                out.update(_est_metrics(f"{mode}/{tname}/{model}_over_best/ndcg@10", d["ratio"]))
        for model, t in res["timings"].items():
            for k in ("fit_s", "score_all_s", "latency_p50_ms"):
                if t.get(k) is not None:
                    out[f"{mode}/time/{model}/{k}"] = t[k]
        out[f"{mode}/wall_s"] = res["wall_s"]
    return out


def rec_rows(result: dict) -> list[dict]:
    rows = []
    for mode, res in result["modes"].items():
        for tname, table in res["tables"].items():
            for model, mets in table["slices"]["all"]["models"].items():
                rows.append({"mode": mode, "table": tname, "model": model, **{c: mets[c] for c in MAIN_COLUMNS}})
    return rows


def rec_summary(result: dict) -> dict:
    """The printed JSON: main metrics per model and slice NDCG@10, weights, differences, timings."""
    out = {"data": result["data"], "items": result["items"], "purchases_merged": result["purchases_merged"], "wall_s": result["wall_s"],
           "served_model": result["served_model"], "item_vectors": result["item_vectors"], "modes": {}}
    for mode, res in result["modes"].items():
        m: dict[str, Any] = {"split": {k: v for k, v in res["split"].items() if k != "splits"}, "wall_s": res["wall_s"], "tables": {},
                             "ranker": {n: [{k: s[k] for k in ("split", "fit_s", "lgbm_fit_s", "train_groups", "candidate_recall")}
                                            for s in info["splits"]] for n, info in res.get("ranker", {}).items()},
                             "timings": {k: {kk: v for kk, v in t.items() if kk != "latency_ms"} for k, t in res["timings"].items()}}
        for tname, table in res["tables"].items():
            t = {"all": {model: {c: round(mets[c]["mean"], 4) for c in (*MAIN_COLUMNS, *[x for x in mets if "_sampled" in x])}
                         for model, mets in table["slices"]["all"]["models"].items()},
                 "ci_ndcg@10": {model: [round(mets["ndcg@10"]["low"], 4), round(mets["ndcg@10"]["high"], 4)]
                                for model, mets in table["slices"]["all"]["models"].items()},
                 "slices_ndcg@10": {s: {"n": e["n"], **{model: round(mets["ndcg@10"]["mean"], 4) for model, mets in e["models"].items()}}
                                    for s, e in table["slices"].items() if s != "all"}}
            if "vs_best" in table:
                t["best_single"] = table["best_single"]
                t["minus_best_ndcg@10"] = {k: [round(d["difference"][x], 4) for x in ("mean", "low", "high")] for k, d in table["vs_best"].items()}
                t["over_best_ndcg@10"] = {k: [round(d["ratio"][x], 3) for x in ("mean", "low", "high")] for k, d in table["vs_best"].items()}
            m["tables"][tname] = t
        out["modes"][mode] = m
    return out


def retrieval_metrics(result: dict) -> dict[str, float]:
    out = {"wall_s": result["wall_s"], "encode_s": result["encode_s"], "gallery_items": result["gallery_items"]}
    for task, t in result["tasks"].items():
        for m, est in t.items():
            if m != "queries":
                out.update(_est_metrics(f"{task}/{m}", est))
    return out


def retrieval_rows(result: dict) -> list[dict]:
    return [{"task": task, **{m: v for m, v in t.items() if m != "queries"}} for task, t in result["tasks"].items()]


def explain_metrics(result: dict) -> dict[str, float]:
    out = {}
    for backend, r in result.items():
        for m, v in r.items():
            if isinstance(v, dict):
                out.update(_est_metrics(f"{backend}/{m}", v))
            elif isinstance(v, (int, float)):
                out[f"{backend}/{m}"] = v
    return out


def explain_rows(result: dict) -> list[dict]:
    cols = ("grounding_precision", "hallucination_rate", "bleu4", "rougeL", "unique_sentence_ratio", "feature_match_ratio",
            "feature_coverage_ratio", "feature_diversity")
    return [{"backend": b, **{c: r[c] for c in cols if c in r}} for b, r in result.items()]


def ab_metrics(result: dict) -> dict[str, float]:
    ab, it = result["ab_split"], result["interleaving"]
    out = {"wall_s": result["wall_s"], "ab/sessions_per_arm_needed": ab["sessions_per_arm_needed"],
           "ab/relative_lift": ab["relative_lift"], "interleaving/sessions_needed": it["sessions_needed"],
           "interleaving/wins_a": it["wins_a"], "interleaving/wins_b": it["wins_b"], "interleaving/ties": it["ties"]}
    out.update(_est_metrics("ab/ctr_a", ab["ctr_a"]))
    out.update(_est_metrics("ab/ctr_b", ab["ctr_b"]))
    out.update(_est_metrics("ab/lift", ab["lift"]))
    out.update(_est_metrics("interleaving/delta", it["delta"]))
    return out


def ab_rows(result: dict) -> list[dict]:
    ab, it = result["ab_split"], result["interleaving"]
    return [{"a": result["a"], "b": result["b"], "ctr_a": ab["ctr_a"], "ctr_b": ab["ctr_b"], "ab_lift": ab["lift"],
             "ab_sessions_per_arm_needed": round(ab["sessions_per_arm_needed"]), "interleaving_delta": it["delta"],
             "interleaving_sessions_needed": round(it["sessions_needed"])}]


def ab_markdown(result: dict) -> str:
    return md_table(ab_rows(result))


# ----------------------------------------------------------------------------- running
def run_rec(data: str, cfg: RecEvalConfig) -> dict:
    from eval.data import load_catalog

    return evaluate_recommenders(load_catalog(data), cfg, str(data))


def run_retrieval(data: str, cfg: RetrievalEvalConfig) -> dict:
    from eval.data import load_catalog
    from retrieval.encoders import EncoderConfig, create_encoder

    catalog = load_catalog(data)
    enc_cfg = dict(cfg.encoder) if cfg.encoder else {"name": "lit", "heads": cfg.heads}
    enc_cfg.setdefault("cache_dir", cfg.cache_dir)
    enc_cfg.setdefault("threads", cfg.threads)
    if enc_cfg.get("name", "lit") == "lit" and not enc_cfg.get("heads"):
        raise ValueError("the retrieval evaluation needs an encoder: --heads DIR (lit) or an `encoder:` mapping in the config")
    encoder = create_encoder(EncoderConfig(**enc_cfg))
    held = None
    if "heldout" in (cfg.gallery, cfg.queries):
        if not enc_cfg.get("heads"):
            raise ValueError("gallery/queries heldout need lit heads (they name the held-out items); use --gallery all --queries all")
        held = [x for x in held_out_ids(enc_cfg["heads"]) if x in catalog]
    res = evaluate_retrieval(catalog, encoder, held if cfg.gallery == "heldout" else None, cfg,
                             held if cfg.queries == "heldout" else None)
    res.update({"data": str(data), "gallery": cfg.gallery, "queries": cfg.queries,
                "encoder": {k: v for k, v in enc_cfg.items() if k != "cache_dir"}})
    return res


@dataclass
class ExplainEvalConfig:
    """`eval_explain:` section."""

    explanations: list[str] = field(default_factory=list)  # JSONL files of generated explanations
    references: str | None = None  # instruction data (LLaVA form) giving reference answers
    instructions: str | None = None  # instruction data whose requests the `generate` backends explain
    generate: list[str] = field(default_factory=list)  # explainer backends: "grounded", "label=llava:key=value"
    kinds: list[str] = field(default_factory=lambda: ["rationale"])  # instruction kinds to explain
    max_records: int | None = 500
    checker: str | None = DEFAULT_CHECKER  # module:function with the grounding contract; None: no grounding
    bootstrap: int = 1000
    seed: int = 0


def run_explain(data: str, cfg: ExplainEvalConfig) -> dict:
    from eval.data import load_catalog

    if not cfg.explanations and not cfg.generate:
        raise ValueError("give JSONL files of explanations (--explanations FILE) or backends to run (--generate NAME --instructions FILE)")
    if cfg.generate and not cfg.instructions:
        raise ValueError("--generate needs --instructions FILE (instruction data whose requests are explained)")
    catalog = load_catalog(data)
    records = []
    for path in cfg.explanations:
        for r in read_jsonl(path):
            r.setdefault("backend", Path(path).stem)
            records.append(r)
    instructions = read_jsonl(cfg.instructions) if cfg.instructions else []
    if cfg.generate:
        records += generate_explanations(instructions, catalog, cfg.generate, cfg.kinds, cfg.max_records, cfg.seed)
    refs = references_from_instructions(read_jsonl(cfg.references) if cfg.references else instructions) or None
    check = load_checker(cfg.checker) if cfg.checker else None
    result = evaluate_explanations(records, catalog, check, refs, cfg.bootstrap, cfg.seed)
    for backend, res in result.items():  # a few examples to read next to the numbers
        res["examples"] = [{k: r.get(k) for k in ("item_id", "request", "text", "fallback_reason") if r.get(k) is not None}
                           for r in records if str(r.get("backend", "unknown")) == backend][:10]
    return result


def run_ab_eval(data: str, cfg: ABConfig) -> dict:
    from eval.data import load_catalog

    return run_ab(load_catalog(data), cfg, str(data))


def run_goes_with(data: str, cfg: GoesWithEvalConfig) -> dict:
    from eval.data import load_catalog

    return evaluate_goes_with(load_catalog(data), cfg, str(data))


@dataclass
class Evaluation:
    name: str
    section: str
    config_cls: type
    run: Callable[[str, Any], dict]
    metrics: Callable[[dict], dict[str, float]]
    rows: Callable[[dict], list[dict]]
    plots: Callable[[dict, Path], list[Path]]
    markdown: Callable[[dict], str]
    summary: Callable[[dict], dict] = lambda r: r


EVALUATIONS: dict[str, Evaluation] = {
    "rec": Evaluation("rec", "eval_rec", RecEvalConfig, run_rec, rec_metrics, rec_rows, rec_plots, rec_markdown, rec_summary),
    "retrieval": Evaluation("retrieval", "eval_retrieval", RetrievalEvalConfig, run_retrieval, retrieval_metrics, retrieval_rows,
                            retrieval_plots, retrieval_markdown),
    "explain": Evaluation("explain", "eval_explain", ExplainEvalConfig, run_explain, explain_metrics, explain_rows, explain_plots,
                          explain_markdown),
    "ab": Evaluation("ab", "eval_ab", ABConfig, run_ab_eval, ab_metrics, ab_rows, ab_plots, ab_markdown),
    "goes-with": Evaluation("goes-with", "eval_goes_with", GoesWithEvalConfig, run_goes_with, goes_with_metrics, goes_with_rows,
                            lambda result, out: [], goes_with_markdown, goes_with_summary),
}


def get_evaluation(name: str) -> Evaluation:
    if name not in EVALUATIONS:
        raise ValueError(f"unknown evaluation {name!r}; choose one of {sorted(EVALUATIONS)}")
    return EVALUATIONS[name]


# ----------------------------------------------------------------------------- Markdown cells
def cell(v: Any) -> str:
    if isinstance(v, dict) and "mean" in v:
        if v["mean"] != v["mean"]:
            return "-"
        return f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"
    if isinstance(v, float):
        return "-" if v != v else f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def md_table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    cols = list(dict.fromkeys(c for r in rows for c in r))
    lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_outputs(ev: Evaluation, result: dict, out: Path) -> list[Path]:
    """result.json, tables.md and the plots under `out`; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "result.json", out / "tables.md"]
    atomic_write_json(files[0], result, indent=1, default=str)
    atomic_write_text(files[1], ev.markdown(result))
    files += ev.plots(result, out)
    return files
