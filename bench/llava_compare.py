"""Untuned vs tuned tiny-offline LLaVA vs the grounded template explainer, on held-out items. Prints JSON.

    PYTHONPATH=. python bench/llava_compare.py --catalog var/hm/catalog --val var/synth/hm/val.llava.jsonl \\
        --tuned var/tune/tiny-offline/merged --items 200

Items and requests: the first N distinct items of the rationale records in the held-out split of
`whyrec synth generate` (split by product group, so no training item shares a group with them); the
records' answers are the references. Metrics come from the project's explanation evaluation
(`eval.explain_eval.evaluate_explanations`, with bootstrap intervals), per backend, on the model's own
text before any fallback ("<name>": the template's fit/misfit sentences and the model's words about the
item, composed as `LlavaExplainer.explain_iter` composes them) and on what a shopper is served ("<name>-served"):
- grounding_precision: mean per rationale of supported / (supported + contradicted) claims
  (`synth_data.grounding.check`; 1.0 for a rationale without claims), and `grounding_precision_micro`:
  the share of all stated attribute values that are true (contradicted claims / all claims, pooled);
- hallucination_rate: share of rationales stating at least one false attribute value;
- fallback_rate: share of served rationales replaced by the template (contradiction or empty output);
- bleu4 (corpus) and rougeL (LCS F1) against the references; unique_sentence_ratio;
  feature_match_ratio (share naming at least one attribute value the reference names);
- latency: seconds per rationale in batch mode, and p50 of single requests (batch size 1).
The references are written by synth's template generator, the same sentence bank the template
explainer uses, so the template's BLEU/ROUGE are an upper bound of "sounds like the data", not quality.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time

import torch

# --------------------------------------------------------------------------- data
def held_out(val_path: str, catalog, n: int) -> list[dict]:
    rows, seen = [], set()
    with open(val_path, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec.get("kind") != "rationale" or rec["item_id"] in seen or rec["item_id"] not in catalog:
                continue
            seen.add(rec["item_id"])
            rows.append({"item_id": rec["item_id"], "request": rec["meta"]["request"], "reference": rec["conversations"][-1]["value"],
                         "product": catalog[rec["item_id"]]})
            if len(rows) == n:
                break
    if len(rows) < n:
        logging.warning("only %d held-out rationale items in %s (asked for %d)", len(rows), val_path, n)
    return rows


def run_template(rows: list[dict]) -> dict:
    from synth_data.explain import GroundedExplainer, gather_evidence

    ex = GroundedExplainer()
    times = []
    for row in rows:
        t = time.perf_counter()
        row["texts"]["template"] = ex.explain(row["request"], row["product"], gather_evidence(row["request"], row["product"])).text
        times.append(time.perf_counter() - t)
    return {"latency_s_per_rationale": round(statistics.mean(times), 5)}


def run_llava(name: str, model: str, rows: list[dict], args) -> dict:
    """Raw texts in batches (timed), the served (checked, maybe fallen back) texts, and single-request latency."""
    from synth_data.explain import gather_evidence

    from llava_tuning.generate import GenerationSettings, LlavaExplainer

    t0 = time.perf_counter()
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, dtype=args.dtype)
    ex = LlavaExplainer(model=model, settings=settings, **({"cache_dir": args.cache_dir} if args.cache_dir else {}))
    load_s = time.perf_counter() - t0
    items = [(r["request"], r["product"], gather_evidence(r["request"], r["product"])) for r in rows]
    start = time.perf_counter()
    words: list[str] = []
    tokens: list[int] = []
    for i in range(0, len(items), args.batch_size):  # the live path: the model writes about each item
        words += ex.item_words([p for _, p, _ in items[i : i + args.batch_size]])
        tokens += ex.generator.last_new_tokens
        logging.info("%s: %d/%d rationales, %.1f s", name, len(words), len(items), time.perf_counter() - start)
    batch_s = (time.perf_counter() - start) / len(items)
    for row, said, item in zip(rows, words, items):
        text = f"{ex.fallback.compose(*item).text} {said}".strip()  # composed, before any check
        served = ex.from_words(*item, said)  # as explain_iter serves it
        row["texts"][name] = text
        row["texts"][f"{name}-served"] = served.text
        row["fallback"][f"{name}-served"] = served.fallback_reason
    single = []
    ex.generator.settings.batch_size = 1
    for item in items[: args.latency_sample]:
        t = time.perf_counter()
        ex.item_words([item[1]])
        single.append(time.perf_counter() - t)
    return {"model": model, "load_s": round(load_s, 1), "batch_size": args.batch_size,
            "latency_s_per_rationale_batch": round(batch_s, 3),
            "latency_s_single_p50": round(statistics.median(single), 3) if single else None,
            "new_tokens_mean": round(statistics.mean(tokens), 1)}


def summarise(metrics: dict) -> dict:
    """evaluate_explanations' output, flattened to means (with the 95% interval where there is one)."""
    out = {}
    for key, v in metrics.items():
        if isinstance(v, dict) and "mean" in v:
            out[key] = round(v["mean"], 4)
            if v.get("low") is not None and v["low"] == v["low"]:
                out[f"{key}_ci95"] = [round(v["low"], 4), round(v["high"], 4)]
        elif isinstance(v, float):
            out[key] = round(v, 4)
        else:
            out[key] = v
    claims, con = out.get("claims_per_explanation"), out.get("contradicted_per_explanation")
    if claims:
        out["grounding_precision_micro"] = round(1 - con / claims, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", default="var/hm/catalog")
    ap.add_argument("--val", default="var/synth/hm/val.llava.jsonl")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--model", action="append", metavar="NAME=PATH",
                    help="a model to compare (repeatable); default: untuned=tiny-offline tuned=var/tune/tiny-offline")
    ap.add_argument("--cache-dir", help="model cache (default: the preset's, var/cache/models)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--latency-sample", type=int, default=8, help="single requests timed for the p50 latency")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--dump", default="var/bench/llava_compare.jsonl", help="per-item texts, for reading")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    from eval.explain_eval import evaluate_explanations
    from retrieval.artifacts import atomic_write_text
    from retrieval.catalog import Catalog
    from synth_data.grounding import check

    models = dict(m.split("=", 1) for m in (args.model or ["untuned=tiny-offline", "tuned=var/tune/tiny-offline"]))
    catalog = Catalog.load(args.catalog)
    rows = held_out(args.val, catalog, args.items)
    for r in rows:
        r["texts"], r["fallback"] = {}, {}
    timing = {"template": run_template(rows)}
    for name, model in models.items():
        timing[name] = run_llava(name, model, rows, args)
    records = []
    for r in rows:
        for backend, text in r["texts"].items():
            rec = {"item_id": r["item_id"], "request": r["request"], "text": text, "backend": backend, "references": [r["reference"]]}
            if backend in r["fallback"]:
                rec["fallback_reason"] = r["fallback"][backend]
            records.append(rec)
    metrics = evaluate_explanations(records, catalog, check, bootstrap=args.bootstrap)
    keep = ("n", "grounding_precision", "grounding_precision_micro", "hallucination_rate", "fallback_rate", "bleu4", "rougeL",
            "unique_sentence_ratio", "feature_match_ratio", "claims_per_explanation")
    out: dict = {"items": len(rows), "val": args.val, "threads": args.threads, "dtype": args.dtype,
                 "max_new_tokens": args.max_new_tokens, "backends": {}}
    for backend, m in metrics.items():
        flat = summarise(m)
        base = backend.removesuffix("-served")
        out["backends"][backend] = {**({} if backend.endswith("-served") else timing.get(base, {})),
                                    **{k: v for k, v in flat.items() if k.split("_ci95")[0] in keep}}
    if args.dump:
        atomic_write_text(args.dump, "".join(json.dumps({k: v for k, v in r.items() if k != "product"}, ensure_ascii=False) + "\n"
                                             for r in rows))
    out["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
