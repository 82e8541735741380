"""`whyrec eval explain`: explanation quality per backend (template, tiny LLaVA before/after tuning, ...).

Input: JSONL records of generated explanations, one per (request, item):
    {"item_id": ..., "text": "<the explanation>", "backend": "grounded",
     "reference": "<a reference explanation>" | "references": [...],   (optional: BLEU/ROUGE/FMR)
     "features": ["colour:black", ...],                               (optional: FMR truth)
     "id": ..., "request": ...}                                         (optional)
References can also come from instruction data (LLaVA form: the "gpt" turns), matched by record
`id`, else by `item_id`. Grounding goes through a checker with the `synth_data.grounding.check`
contract (text, product) -> result with supported / contradicted / not_stated, ok, precision.
"""
from __future__ import annotations

import importlib
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from tqdm import tqdm

from eval import metrics as M
from eval import text_metrics as T
from retrieval.catalog import Catalog

log = logging.getLogger(__name__)

DEFAULT_CHECKER = "synth_data.grounding:check"
RENAME = {"hallucinated": "hallucination_rate", "claims": "claims_per_explanation",
          "contradicted": "contradicted_per_explanation", "not_stated": "not_stated_per_explanation"}


def load_checker(spec: str = DEFAULT_CHECKER) -> Callable:
    """A grounding checker from "module:function"."""
    mod, _, fn = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), fn or "check")
    except (ImportError, AttributeError) as err:
        raise ValueError(f"grounding checker {spec!r} is not available ({err}); it comes with synth_data.grounding") from None


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {n}: not JSON ({err.msg})") from None
    return out


def references_from_instructions(records: Iterable[dict]) -> dict[str, list[str]]:
    """{record id and item id -> the gpt answers} from instruction data in LLaVA form."""
    out: dict[str, list[str]] = defaultdict(list)
    for r in records:
        answers = [t["value"] for t in r.get("conversations", []) if t.get("from") == "gpt"]
        if not answers:
            continue
        if r.get("id") is not None:
            out[f"id:{r['id']}"] += answers
        if r.get("item_id") is not None:
            out[f"item:{r['item_id']}"] += answers
    return dict(out)


def parse_backend(spec: str) -> tuple[str, str, dict[str, str]]:
    """"name" or "label=name:key=value,key=value" -> (label, explainer name, factory kwargs)."""
    label, _, rest = spec.partition("=") if "=" in spec.split(":", 1)[0] else (None, "", spec)
    name, _, args = rest.partition(":")
    kwargs = dict(a.split("=", 1) for a in args.split(",") if a) if args else {}
    return label or spec, name, kwargs


def _request_of(record: dict) -> str:
    """The shopper's words: the record's meta.request (synth_data writes it), else the human turn."""
    req = (record.get("meta") or {}).get("request") or record.get("request")
    if req:
        return str(req)
    human = next((t["value"] for t in record.get("conversations", []) if t.get("from") == "human"), "")
    return human.replace("<image>", "").strip()


def generate_explanations(instructions: list[dict], catalog: Catalog, backends: list[str], kinds: list[str] | None = None,
                          max_records: int | None = None, seed: int = 0) -> list[dict]:
    """Explanations of each backend for the requests of instruction records (LLaVA form), with the
    records' gpt answers as references. Backends are `synth_data.explain` explainers by name
    ("grounded", "llava" once llava_tuning registers it), optionally "label=name:key=value"."""
    from synth_data.explain import gather_evidence, get_explainer

    recs = [r for r in instructions if (not kinds or r.get("kind") in kinds) and str(r.get("item_id")) in catalog and _request_of(r)]
    if max_records is not None and len(recs) > max_records:
        rng = np.random.default_rng(seed)
        recs = [recs[i] for i in sorted(rng.choice(len(recs), max_records, replace=False))]
    if not recs:
        raise ValueError("no instruction records with a request and a catalog item to explain")
    out = []
    for spec in backends:
        label, name, kwargs = parse_backend(spec)
        if name == "llava":
            importlib.import_module("llava_tuning")  # registers the llava explainer
        explainer = get_explainer(name, **kwargs)
        for r in tqdm(recs, desc=f"explaining with {label}", unit="expl", mininterval=5):
            request, product = _request_of(r), catalog[str(r["item_id"])]
            rat = explainer.explain(request, product, gather_evidence(request, product))
            refs = [t["value"] for t in r.get("conversations", []) if t.get("from") == "gpt"]
            out.append({"id": r.get("id"), "item_id": product.id, "kind": r.get("kind"), "request": request, "text": rat.text,
                        "backend": label, "references": refs, "fallback_reason": getattr(rat, "fallback_reason", None)})
    return out


def _features(raw) -> set[T.Feature]:
    out = set()
    for f in raw or []:
        kind, value = (f.split(":", 1) if isinstance(f, str) else f)
        out.add((kind.strip(), value.strip()))
    return out


def evaluate_explanations(records: list[dict], catalog: Catalog, check: Callable | None, references: dict[str, list[str]] | None = None,
                          bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Metrics per backend. `check=None` leaves grounding out."""
    from retrieval.vocabulary import item_values

    if not records:
        raise ValueError("no explanation records to evaluate")
    references = references or {}
    groups: dict[str, list[dict]] = defaultdict(list)
    for n, r in enumerate(records, 1):
        if "item_id" not in r or "text" not in r:
            raise ValueError(f"record {n} lacks item_id or text")
        if str(r["item_id"]) not in catalog:
            raise ValueError(f"record {n}: item {r['item_id']} is not in the catalog")
        groups[str(r.get("backend", "unknown"))].append(r)
    out: dict[str, Any] = {}
    for backend, recs in groups.items():
        texts = [str(r["text"]) for r in recs]
        products = [catalog[str(r["item_id"])] for r in recs]
        refs = []
        for r in recs:
            rs = r.get("references") or ([r["reference"]] if r.get("reference") else None)
            if rs is None:
                rs = references.get(f"id:{r.get('id')}") or references.get(f"item:{r['item_id']}")
            refs.append(list(rs) if rs else [])
        gen_feats = [T.features(t) for t in texts]
        truth = [_features(r.get("features")) or (set().union(*(T.features(x) for x in rf)) if rf else set())
                 for r, rf in zip(recs, refs)]
        available = set()
        for p in products:
            available |= {(k, v) for k, vs in item_values(p).items() for v in vs}
        res: dict[str, Any] = {"n": len(recs), "with_reference": sum(bool(r) for r in refs)}
        # per-record values, bootstrapped
        cols: dict[str, list[float]] = defaultdict(list)
        with_ref = [i for i, r in enumerate(refs) if r]
        for i in with_ref:
            for k, v in T.rouge_scores(texts[i], refs[i]).items():
                cols[k].append(v)
        if check is not None:
            for r, t, p in tqdm(list(zip(recs, texts, products)), desc=f"grounding {backend}", unit="expl", mininterval=5):
                for k, v in T.grounding_scores(check, t, p, r.get("request")).items():
                    cols[k].append(v)
        for k, vals in cols.items():
            est = M.bootstrap_ci(vals, bootstrap, seed=seed)
            res[RENAME.get(k, k)] = est.to_dict()
        if with_ref:
            stats = np.stack([T.bleu_stats(texts[i], refs[i]) for i in with_ref])
            idx = np.random.default_rng(seed).integers(0, len(with_ref), (bootstrap, len(with_ref)))
            for n in (1, 4):
                boots = [T.bleu_from_stats(stats[b].sum(0), n) for b in idx]
                lo, hi = np.quantile(boots, [0.025, 0.975])
                res[f"bleu{n}"] = {"mean": T.bleu_from_stats(stats.sum(0), n), "low": float(lo), "high": float(hi), "n": len(with_ref)}
        fallbacks = [r.get("fallback_reason") for r in recs if "fallback_reason" in r]
        if fallbacks:
            res["fallback_rate"] = sum(bool(f) for f in fallbacks) / len(fallbacks)
        res["unique_sentence_ratio"] = T.unique_sentence_ratio(texts)
        res["distinct1"] = T.distinct_n(texts, 1)
        res["distinct2"] = T.distinct_n(texts, 2)
        res["feature_match_ratio"] = T.feature_match_ratio(gen_feats, truth)
        res["feature_coverage_ratio"] = T.feature_coverage_ratio(gen_feats, available)
        res["feature_diversity"] = T.feature_diversity(gen_feats, seed=seed)
        out[backend] = res
    return out


EXPLAIN_COLUMNS = ("grounding_precision", "hallucination_rate", "bleu1", "bleu4", "rouge1", "rouge2", "rougeL",
                   "unique_sentence_ratio", "feature_match_ratio", "feature_coverage_ratio", "feature_diversity")


def explain_markdown(result: dict) -> str:
    cols = [c for c in EXPLAIN_COLUMNS if any(c in r for r in result.values())]
    lines = ["| backend | n | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for backend, r in result.items():
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, dict):
                cells.append(f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]")
            elif v is None or v != v:
                cells.append("-")
            else:
                cells.append(f"{v:.3f}")
        lines.append(f"| {backend} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
