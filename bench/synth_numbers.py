"""Numbers for synth_data on a real catalog; prints JSON.

  PYTHONPATH=. python bench/synth_numbers.py --catalog /work/main/var/hm/catalog -n 5000

- template generation: examples per minute (planning, answering, the grounding filter, writing
  both output forms and the side-by-side comparison images, all included), reject rate of the
  filter and its reasons, kinds, question types, hard negatives, distinct-sentence ratio;
- the checker on the catalog's own text: how often an item's description contradicts its own
  structured facts (what the checker flags in real prose);
- the checker's precision / recall on the hand-labelled sentences in tests/synth_data/data
  (grounding_labelled.jsonl was used while developing the checker's clause rules;
  grounding_heldout.jsonl was written after them and not tuned on).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.catalog import Catalog  # noqa: E402
from synth_data.config import load_config  # noqa: E402
from synth_data.grounding import check  # noqa: E402
from synth_data.grounding_eval import default_paths, evaluate, load_items, load_labelled  # noqa: E402
from synth_data.pipeline import generate  # noqa: E402


def description_self_check(catalog: Catalog, limit: int | None = None) -> dict:
    products = catalog.products[:limit] if limit else catalog.products
    t0 = time.perf_counter()
    flagged, reasons, examples = 0, Counter(), []
    for p in products:
        if not p.description:
            continue
        r = check(p.description, p)
        if not r.ok:
            flagged += 1
            reasons.update(t.kind for t in r.contradicted)
            if len(examples) < 8:
                examples.append({"id": p.id, "description": p.description[:160], "reasons": r.reasons()})
    n = sum(1 for p in products if p.description)
    return {"descriptions": n, "flagged": flagged, "flagged_rate": round(flagged / n, 4) if n else 0.0,
            "by_kind": dict(reasons.most_common()), "checks_per_second": round(n / (time.perf_counter() - t0), 1),
            "examples": examples}


def checker_quality() -> dict:
    dev_path, items_path = default_paths()
    items = load_items(items_path)
    out = {}
    sets = {"development": load_labelled(dev_path), "held_out": load_labelled(dev_path.parent / "grounding_heldout.jsonl")}
    sets["all"] = sets["development"] + sets["held_out"]
    for name, rows in sets.items():
        res = evaluate(rows, items)
        disagreements = res.pop("disagreements")
        if name != "all":
            res["disagreements"] = disagreements
        out[name] = res
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", default="/work/main/var/hm/catalog")
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="where to write the examples (default: a temporary folder)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    result: dict = {"checker": checker_quality()}
    catalog = Catalog.load(args.catalog)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        cfg = load_config(None, n=args.n, out=out, seed=args.seed)
        t0 = time.perf_counter()
        report = generate(catalog, cfg, progress=False)
        wall = time.perf_counter() - t0
        rep = report.to_dict()
        result["template"] = {
            "catalog_items": len(catalog), "n": args.n, "accepted": rep["accepted"], "attempted": rep["attempted"],
            "wall_s": round(wall, 2), "examples_per_minute": round(rep["accepted"] / wall * 60, 1),
            "reject_rate": rep["reject_rate"], "reject_reasons": rep["reject_reasons"], "reject_examples": rep["reject_examples"][:5],
            "kinds": rep["kinds"], "kind_shares": {k: round(v / rep["accepted"], 3) for k, v in rep["kinds"].items()},
            "question_types": rep["question_types"], "hard_negatives": rep["hard_negatives"], "splits": rep["splits"],
            "distinct_sentence_ratio": rep["distinct_sentence_ratio"], "distinct_answer_ratio": rep["distinct_answer_ratio"],
        }
    result["descriptions_vs_own_facts"] = description_self_check(catalog)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
