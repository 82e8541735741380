"""Untuned vs tuned tiny-offline LLaVA vs the grounded template explainer, on held-out items. Prints JSON.

    PYTHONPATH=. python bench/llava_compare.py --catalog var/hm/catalog --val var/synth/hm/val.llava.jsonl \\
        --tuned var/tune/tiny-offline/merged --items 200

Items and requests: the first N distinct items of the rationale records in the held-out split of
`whyrec synth generate` (split by product group, so no training item shares a group with them); the
records' answers are the references. Metrics, per backend, on the model's own text (before any
fallback) unless said otherwise:
- grounding_precision: share of stated attribute values the item's facts back, over all rationales
  (supported / (supported + contradicted), `synth_data.grounding.check`); also the mean per rationale;
- hallucination_rate: share of rationales stating at least one false attribute value;
- fallback_rate: share of served rationales replaced by the template (contradiction or empty output);
- bleu4 (corpus, no smoothing) and rougeL (LCS F1, mean) against the references;
- unique_sentence_ratio: distinct sentences / all sentences;
- feature_match_ratio: share of rationales naming at least one attribute value the reference names;
- latency: seconds per rationale in batch mode, and p50 of single requests (batch size 1).
The references are written by synth's template generator, the same sentence bank the template
explainer uses, so the template's BLEU/ROUGE are an upper bound of "sounds like the data", not quality.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import statistics
import time
from collections import Counter
from pathlib import Path

import torch

WORD_RE = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")
SENT_RE = re.compile(r"(?<=[.!?])\s+")


# --------------------------------------------------------------------------- text metrics
def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def ngrams(toks: list[str], n: int) -> Counter:
    return Counter(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))


def corpus_bleu4(hyps: list[str], refs: list[str]) -> float:
    """Papineni et al.: clipped n-gram precisions 1..4, geometric mean, brevity penalty; no smoothing."""
    match, total = [0] * 4, [0] * 4
    c = r = 0
    for h, ref in zip(hyps, refs):
        hw, rw = words(h), words(ref)
        c, r = c + len(hw), r + len(rw)
        for n in range(1, 5):
            hc, rc = ngrams(hw, n), ngrams(rw, n)
            match[n - 1] += sum(min(k, rc[g]) for g, k in hc.items())
            total[n - 1] += max(len(hw) - n + 1, 0)
    if min(match) == 0 or min(total) == 0:
        return 0.0
    bp = 1.0 if c > r else math.exp(1 - r / c) if c else 0.0
    return bp * math.exp(sum(math.log(m / t) for m, t in zip(match, total)) / 4)


def rouge_l(h: str, ref: str) -> float:
    a, b = words(h), words(ref)
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if not lcs:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def unique_sentence_ratio(texts: list[str]) -> float:
    sents = [" ".join(words(s)) for t in texts for s in SENT_RE.split(t.strip())]
    sents = [s for s in sents if s]
    return len(set(sents)) / len(sents) if sents else 0.0


def feature_set(text: str) -> set[tuple[str, str]]:
    from retrieval.vocabulary import extract_terms

    return {(t.kind, t.value) for t in extract_terms(text) if not t.negated}


def score(rows: list[dict], text_key: str) -> dict:
    from synth_data.grounding import check

    sup = con = 0
    per, halluc = [], 0
    fmr_hits = fmr_n = 0
    for row in rows:
        res = check(row[text_key], row["product"], request=row["request"])
        sup, con = sup + len(res.supported), con + len(res.contradicted)
        per.append(res.precision)
        halluc += not res.ok
        truth = feature_set(row["reference"])
        if truth:
            fmr_n += 1
            fmr_hits += bool(feature_set(row[text_key]) & truth)
    texts = [r[text_key] for r in rows]
    return {
        "grounding_precision": round(sup / (sup + con), 4) if sup + con else 1.0,
        "grounding_precision_mean_per_rationale": round(statistics.mean(per), 4),
        "claims_per_rationale": round((sup + con) / len(rows), 3),
        "hallucination_rate": round(halluc / len(rows), 4),
        "bleu4": round(corpus_bleu4(texts, [r["reference"] for r in rows]), 4),
        "rougeL": round(statistics.mean(rouge_l(t, r["reference"]) for t, r in zip(texts, rows)), 4),
        "unique_sentence_ratio": round(unique_sentence_ratio(texts), 4),
        "feature_match_ratio": round(fmr_hits / fmr_n, 4) if fmr_n else None,
        "mean_words": round(statistics.mean(len(words(t)) for t in texts), 1),
        "empty_rate": round(sum(not t.strip() for t in texts) / len(texts), 4),
    }


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
        row["template"] = ex.explain(row["request"], row["product"], gather_evidence(row["request"], row["product"])).text
        times.append(time.perf_counter() - t)
    return {"latency_s_per_rationale": round(statistics.mean(times), 5), "fallback_rate": 0.0}


def run_llava(name: str, model: str, rows: list[dict], args) -> dict:
    from synth_data.explain import gather_evidence

    from llava_tuning.generate import GenerationSettings, LlavaExplainer

    t0 = time.perf_counter()
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, dtype=args.dtype)
    ex = LlavaExplainer(model=model, settings=settings, **({"cache_dir": args.cache_dir} if args.cache_dir else {}))
    load_s = time.perf_counter() - t0
    items = [(r["request"], r["product"], gather_evidence(r["request"], r["product"])) for r in rows]
    start = time.perf_counter()
    raw = []
    tokens = []
    for i in range(0, len(items), args.batch_size):
        raw += ex.raw(items[i : i + args.batch_size])
        tokens += ex.generator.last_new_tokens
        logging.info("%s: %d/%d rationales, %.1f s", name, len(raw), len(items), time.perf_counter() - start)
    batch_s = (time.perf_counter() - start) / len(items)
    fallbacks = 0
    for row, text, item in zip(rows, raw, items):
        row[f"{name}_raw"] = text
        served = ex._checked(text, *item)
        row[f"{name}_served"] = served.text
        fallbacks += served.fallback_reason is not None
    single = []
    ex.generator.settings.batch_size = 1
    for item in items[: args.latency_sample]:
        t = time.perf_counter()
        ex.raw([item])
        single.append(time.perf_counter() - t)
    return {"model": model, "load_s": round(load_s, 1), "fallback_rate": round(fallbacks / len(rows), 4),
            "latency_s_per_rationale_batch": round(batch_s, 3), "batch_size": args.batch_size,
            "latency_s_single_p50": round(statistics.median(single), 3) if single else None,
            "new_tokens_mean": round(statistics.mean(tokens), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", default="var/hm/catalog")
    ap.add_argument("--val", default="var/synth/hm/val.llava.jsonl")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--untuned", default="tiny-offline", help="the base model (preset), no adapter")
    ap.add_argument("--tuned", default="var/tune/tiny-offline", help="tune output, adapter or merged dir")
    ap.add_argument("--cache-dir", help="model cache (default: the preset's, var/cache/models)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=80)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--latency-sample", type=int, default=8, help="single requests timed for the p50 latency")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", default="", help="comma-separated backends to skip: untuned,tuned")
    ap.add_argument("--dump", default="var/bench/llava_compare.jsonl", help="per-item texts, for reading")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    from retrieval.catalog import Catalog

    catalog = Catalog.load(args.catalog)
    rows = held_out(args.val, catalog, args.items)
    skip = set(filter(None, args.skip.split(",")))
    out: dict = {"items": len(rows), "val": args.val, "threads": args.threads, "dtype": args.dtype,
                 "max_new_tokens": args.max_new_tokens, "backends": {}}
    out["backends"]["template"] = {**run_template(rows), **score(rows, "template")}
    for name, model in (("untuned", args.untuned), ("tuned", args.tuned)):
        if name in skip:
            continue
        info = run_llava(name, model, rows, args)
        out["backends"][name] = {**info, **score(rows, f"{name}_raw"),
                                 "served": {k: v for k, v in score(rows, f"{name}_served").items()
                                            if k in ("grounding_precision", "hallucination_rate", "bleu4", "rougeL")}}
    if args.dump:
        Path(args.dump).parent.mkdir(parents=True, exist_ok=True)
        with open(args.dump, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps({k: v for k, v in r.items() if k != "product"}, ensure_ascii=False) + "\n")
    out["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
