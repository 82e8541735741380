"""Issue 11's quality numbers: untuned LLaVA vs tuned LLaVA vs the grounded template, on held-out
product groups (never planned into instruction data). Prints JSON.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/llava_quality.py --config configs/tune-tiny-offline.yaml \\
        --items 200 --tuned data/demo/llava --out var/quality.json

Pairs: `eval.explain_eval.heldout_pairs` - a shopper request sampled from a held-out item, then that item
(fits) or a held-out near miss whose facts contradict a request term (misfit), alternating, so half the
pairs are misfits. Per system, on the model's own text ("raw") and on what a shopper is served
("served", after `synth_data.explain.settle`, which falls back to the template):
- claim_precision_project: supported / (supported + contradicted) attribute claims by synth_data.grounding;
- claim_precision_wordlist: the same by `WordListChecker`, plain word lists of the catalog's colour,
  type and pattern values, written without synth_data.grounding;
- hallucination_rate: texts with a contradicted or unverified attribute claim;
- honest_on_misfits: misfit texts that say it does not fit (a negation / "but" / "falls short"), do
  not also say it fits, name what misses and state nothing false (`honest_about_misfit`);
- description_facts_per_fitting_rationale: description facts the text states that the request did
  not name (`informativeness`);
- fallback_rate: served texts replaced by the template (each with its reason).
The LLaVA systems are measured on the live serving path (`LlavaExplainer.item_words` + `from_words`,
what `explain_iter` does for an item without cached text): the model writes about the item (no request
in its turn; `tuned` decodes under FactConstraint with no word exempt), "raw" is the request's fit/misfit
sentences followed by the model's whole sentences, unfiltered, and "served" is the composition of the
catalog-backed ones. `<system>-words` scores the model's words alone (raw) and what of them is kept
(served; its fallback = nothing kept). Runs before 2026-11-30 22:00 measured the rationale turn instead.
Describe-from-picture: the model sees only the photo (no title, attributes or description) and is
scored against the human description (BLEU-4, ROUGE-L) and on the colour / type / pattern it states.
The template cannot see pictures: its row there is `template-facts`, a description written from the
(unwithheld) facts, for reference only.
"""
from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

log = logging.getLogger("llava_quality")


def _generate_llava(name: str, model: str, pairs, describe_items, catalog, args, constrained: bool = True
                    ) -> tuple[list[dict], list[dict], dict]:
    import torch

    from llava_tuning.generate import GenerationSettings, LlavaExplainer, _image_for
    from synth_data.explain import gather_evidence
    from synth_data.prompts import describe_prompt
    from synth_data.tasks import DESCRIBE_Q

    torch.set_num_threads(args.threads)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    t0 = time.perf_counter()
    kwargs = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    if "constrained" in inspect.signature(LlavaExplainer.__init__).parameters:
        kwargs["constrained"] = constrained
    elif constrained:
        log.warning("this LlavaExplainer has no constrained decoding: %s is measured without it", name)
    explainer = LlavaExplainer(model=model, settings=settings, **kwargs)
    constrained = bool(getattr(explainer, "constrained", False))
    load_s = time.perf_counter() - t0
    from llava_tuning.describe import keep_item_text, whole_sentences

    items = [(p["request"], catalog[p["item_id"]], gather_evidence(p["request"], catalog[p["item_id"]])) for p in pairs]
    t0 = time.perf_counter()
    words = explainer.item_words([prod for _, prod, _ in items])  # the live path: the model writes about the item
    rat_s = time.perf_counter() - t0
    rows, word_rows = [], []
    for p, said, (req, prod, ev) in zip(pairs, words, items):
        said = whole_sentences(" ".join(said.split()))
        raw = f"{explainer.fallback.compose(req, prod, ev).text} {said}".strip()  # composed, before any filter or check
        served = explainer.from_words(req, prod, ev, said)  # as explain_iter serves it
        rows.append({**p, "raw": raw, "served": served.text, "fallback_reason": served.fallback_reason})
        kept, reason = keep_item_text(said, prod)
        word_rows.append({**p, "raw": said, "served": kept, "fallback_reason": reason if not kept else None})
    timing = {"load_s": round(load_s, 1), "rationales_s": round(rat_s, 1), "constrained": constrained,
              "s_per_rationale": round(rat_s / max(1, len(pairs)), 3), "words_rows": word_rows}
    if not describe_items:
        return rows, [], timing
    # describe-from-picture is never constrained: the constraint knows the item's facts, the photo must carry them
    convs = [[{"from": "human", "value": describe_prompt(DESCRIBE_Q[0])}] for _ in describe_items]
    images = [_image_for(p, None) for p in describe_items]
    t0 = time.perf_counter()
    texts = explainer.generator.generate(convs, images, GenerationSettings(max_new_tokens=args.describe_tokens,
                                                                           batch_size=args.batch_size))
    desc_s = time.perf_counter() - t0
    desc = [{"item_id": p.id, "text": t} for p, t in zip(describe_items, texts)]
    timing["describe_s"] = round(desc_s, 1)
    log.info("%s: %s", name, {k: v for k, v in timing.items() if k != "words_rows"})
    return rows, desc, timing


def _served(model: str, pairs, catalog, args, item_text: Path | None) -> tuple[list[dict], dict]:
    """What a shopper reads from the served LLaVA backend: the offline item text (`whyrec index
    describe`'s job, written here for the held-out items) composed with the request's fit/misfit
    sentences, no live generation."""
    import tempfile

    import torch

    from llava_tuning.describe import _records, describe_items, finished, merge_shards
    from llava_tuning.generate import GenerationSettings, ItemTexts, LlavaExplainer

    torch.set_num_threads(args.threads)
    kwargs = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    explainer = LlavaExplainer(model=model, settings=GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size),
                               live_items=0, **kwargs)
    path = item_text or Path(tempfile.mkdtemp()) / "item_text.jsonl"
    products = list({p["item_id"]: catalog[p["item_id"]] for p in pairs}.values())
    previous = _records(path)  # resumes: an earlier run's file (e.g. copied beside --out) is tried on, not redone
    todo = [p for p in products if p.id not in previous or not finished(previous[p.id], args.attempts, args.min_facts, p)]
    t0 = time.perf_counter()
    counts = describe_items(explainer, todo, path, str(model), args.batch_size, attempts=args.attempts,
                            min_facts=args.min_facts, previous=previous)
    describe_s = time.perf_counter() - t0
    merge_shards(path)
    explainer.item_texts = ItemTexts.load(path)
    with_text = sum(1 for p in products if explainer.item_texts.get(p.id) is not None)
    out = explainer.explain_batch([(p["request"], catalog[p["item_id"]], None) for p in pairs])
    rows = [{**p, "raw": r.text, "served": r.text, "fallback_reason": r.fallback_reason} for p, r in zip(pairs, out)]
    return rows, {"describe_s": round(describe_s, 1), "described": len(todo), "generated": counts["generated"],
                  "s_per_generation": round(describe_s / max(1, counts["generated"]), 3),
                  "items_with_text": with_text, "items": len(products), "attempts": args.attempts, "min_facts": args.min_facts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/tune-tiny-offline.yaml", help="YAML with catalog: and synth: (the split fractions)")
    ap.add_argument("--items", type=int, default=200, help="held-out (request, item) pairs; also the describe-from-picture items")
    ap.add_argument("--tuned", default="data/demo/llava", help="the tuned adapter (or merged dir)")
    ap.add_argument("--untuned", default="tiny-offline", help="the untuned base preset")
    ap.add_argument("--systems", default="template,untuned,tuned,tuned-free",
                    help="template, untuned, tuned (constrained decoding, live), *-free (unconstrained, rationales only), "
                         "served (offline item text composed with the fit/misfit sentences: what /search serves)")
    ap.add_argument("--attempts", type=int, default=3, help="served: turns tried per item while its offline text is refused or thin")
    ap.add_argument("--min-facts", type=int, default=2, help="served: description facts an offline item text should state")
    ap.add_argument("--max-new-tokens", type=int, default=80)
    ap.add_argument("--describe-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--cache-dir", default=None, help="where the assembled base lives (default: the preset's)")
    ap.add_argument("--no-describe", action="store_true", help="rationales only: skip describe-from-picture for the LLaVA systems")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the JSON here, and the texts beside it (.texts.jsonl)")
    ap.add_argument("--rescore", nargs="+", metavar="TEXTS.jsonl",
                    help="score the texts of earlier runs (their .texts.jsonl) instead of generating: one table for several runs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from eval.explain_eval import WordListChecker, describe_quality, heldout_pairs, rationale_quality
    from retrieval.catalog import Catalog
    from synth_data.config import load_config
    from synth_data.explain import GroundedExplainer, gather_evidence
    from synth_data.generators import template_answer
    from synth_data.tasks import Task

    if args.rescore:
        return rescore(args)
    cfg = load_config(args.config)
    if cfg.heldout_fraction <= 0:
        raise ValueError(f"{args.config}: synth.heldout_fraction is 0, so no product group is held out")
    catalog = Catalog.load(cfg.catalog)
    t0 = time.perf_counter()
    pairs = heldout_pairs(catalog, cfg.val_fraction, cfg.heldout_fraction, args.items, seed=args.seed)
    describe_items = [catalog[p["item_id"]] for p in pairs]
    simple = WordListChecker(catalog.products)
    log.info("%d held-out pairs (%d misfits) in %.1fs", len(pairs), sum(not p["fits"] for p in pairs), time.perf_counter() - t0)

    result: dict = {"config": args.config, "items": len(pairs), "misfits": sum(not p["fits"] for p in pairs),
                    "heldout_fraction": cfg.heldout_fraction, "rationales": {}, "describe_from_picture": {}, "timing": {},
                    "load": os.getloadavg()}
    dump: list[dict] = []
    import random

    for system in [s.strip() for s in args.systems.split(",") if s.strip()]:
        if system == "template":
            ex = GroundedExplainer()
            rows = []
            t = time.perf_counter()
            for p in pairs:
                prod = catalog[p["item_id"]]
                r = ex.explain(p["request"], prod, gather_evidence(p["request"], prod))
                rows.append({**p, "raw": r.text, "served": r.text, "fallback_reason": r.fallback_reason})
            result["timing"]["template"] = {"rationales_s": round(time.perf_counter() - t, 2)}
            desc = [{"item_id": prod.id, "text": template_answer(Task("description", [prod], question="Describe this item."),
                                                                random.Random(0))} for prod in describe_items]
            desc_name = "template-facts"
        elif system in ("untuned", "tuned", "untuned-free", "tuned-free"):
            model = args.untuned if system.startswith("untuned") else args.tuned
            free = system.endswith("-free")  # without constrained decoding; rationales only (describe is never constrained)
            rows, desc, timing = _generate_llava(system, model, pairs, [] if free or args.no_describe else describe_items, catalog, args,
                                                 constrained=not free)
            words = timing.pop("words_rows")  # the model's own words alone ("raw") and what of them is kept ("served")
            result["rationales"][f"{system}-words"] = rationale_quality(words, catalog, simple, args.bootstrap, args.seed)
            dump += [{"system": f"{system}-words", "kind": "rationale", **r} for r in words]
            result["timing"][system] = timing
            desc_name = system
        elif system == "served":
            rows, timing = _served(args.tuned, pairs, catalog, args, Path(args.out).with_suffix(".item_text.jsonl") if args.out else None)
            result["timing"][system] = timing
            desc = []
        else:
            raise ValueError(f"unknown system {system!r}; known: template, untuned, tuned, untuned-free, tuned-free, served")
        result["rationales"][system] = rationale_quality(rows, catalog, simple, args.bootstrap, args.seed)
        if desc:
            result["describe_from_picture"][desc_name] = describe_quality(desc, catalog, simple, args.bootstrap, args.seed)
        dump += [{"system": system, "kind": "rationale", **r} for r in rows]
        dump += [{"system": desc_name, "kind": "describe", **d, "reference": catalog[d["item_id"]].description} for d in desc]
    result["load_after"] = os.getloadavg()
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        with out.with_suffix(".texts.jsonl").open("w") as fh:
            for row in dump:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


def rescore(args) -> int:
    """The metrics of texts written by earlier runs (same pairs: they are seeded), in one JSON."""
    from collections import defaultdict

    from eval.explain_eval import WordListChecker, describe_quality, quality_markdown, rationale_quality
    from retrieval.catalog import Catalog
    from synth_data.config import load_config

    catalog = Catalog.load(load_config(args.config).catalog)
    simple = WordListChecker(catalog.products)
    rationales: dict[str, list[dict]] = defaultdict(list)
    describes: dict[str, list[dict]] = defaultdict(list)
    for path in args.rescore:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                (rationales if row["kind"] == "rationale" else describes)[row["system"]].append(row)
    result = {"rescored": args.rescore,
              "rationales": {k: rationale_quality(v, catalog, simple, args.bootstrap, args.seed) for k, v in rationales.items()},
              "describe_from_picture": {k: describe_quality(v, catalog, simple, args.bootstrap, args.seed) for k, v in describes.items()}}
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".md").write_text(quality_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
