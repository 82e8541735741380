"""`whyrec synth ...`: instruction data from a catalog (`generate`) and the grounding check (`check`)."""
from __future__ import annotations

import argparse
import json


def _kinds(text: str | None) -> dict[str, float] | None:
    """'rationale=0.5,question=0.5' -> {'rationale': 0.5, 'question': 0.5}."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        try:
            out[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"--kinds: {part!r} is not NAME=WEIGHT") from None
    return out


def register(subparsers) -> None:
    p = subparsers.add_parser("synth", help="synthetic instruction data and the grounding checker")
    sub = p.add_subparsers(dest="synth_command", required=True, metavar="SUBCOMMAND")

    g = sub.add_parser("generate", help="write grounded instruction examples (LLaVA and messages JSONL)")
    g.add_argument("--config", help="YAML file with a synth: section (configs/synth.yaml)")
    g.add_argument("--backend", choices=["template", "openai"], help="answer writer (default: template)")
    g.add_argument("-n", type=int, help="accepted examples wanted")
    g.add_argument("--catalog", help="catalog directory (from `whyrec data import`)")
    g.add_argument("--out", help="output directory")
    g.add_argument("--seed", type=int)
    g.add_argument("--val-fraction", type=float, help="share of product groups in the validation split")
    g.add_argument("--heldout-fraction", type=float, help="share of product groups kept out of the data (for evaluation)")
    g.add_argument("--thin-fraction", type=float, help="share of rationales and colour/picture questions with a title-only prompt")
    g.add_argument("--kinds", help="example kinds and weights, e.g. rationale=0.4,question=0.3,comparison=0.15,description=0.15")
    g.add_argument("--hard-negative-fraction", type=float)
    g.add_argument("--candidates", choices=["attribute", "search"],
                   help="how candidates for a request are found: attribute (default) or search (the index built by "
                        "`whyrec index build`; needs --config with catalog/encoder/index sections)")
    g.add_argument("--no-images", action="store_true", help="also use items without an image file (text-only examples)")
    g.add_argument("--base-url", help="openai: endpoint, e.g. http://127.0.0.1:8001/v1")
    g.add_argument("--model", help="openai: model name")
    g.add_argument("--api-key-env", help="openai: environment variable holding the key")
    g.add_argument("--concurrency", type=int, help="openai: requests in flight")
    g.add_argument("--max-retries", type=int, help="openai: retries on 429/5xx/timeouts")
    g.add_argument("--cache-dir", help="openai: response cache directory")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=_generate)

    c = sub.add_parser("check", help="which attribute claims of a text the item's facts support (exit 1 on a contradiction)")
    c.add_argument("text")
    c.add_argument("item_id")
    c.add_argument("--catalog", default="var/hm/catalog")
    c.add_argument("--request", help="the shopper's words (quotations of them are not claims)")
    c.set_defaults(func=_check)


def _generate(args: argparse.Namespace) -> int:
    from retrieval.catalog import Catalog
    from synth_data.config import load_config
    from synth_data.pipeline import generate

    cfg = load_config(args.config, backend=args.backend, n=args.n, catalog=args.catalog, out=args.out, seed=args.seed,
                      val_fraction=args.val_fraction, kinds=_kinds(args.kinds),
                      heldout_fraction=args.heldout_fraction, thin_fraction=args.thin_fraction,
                      hard_negative_fraction=args.hard_negative_fraction, require_image=False if args.no_images else None,
                      candidates=args.candidates,
                      openai_base_url=args.base_url, openai_model=args.model, openai_api_key_env=args.api_key_env,
                      openai_concurrency=args.concurrency, openai_max_retries=args.max_retries, openai_cache_dir=args.cache_dir)
    catalog = Catalog.load(cfg.catalog)
    candidates = None
    if cfg.candidates == "search":
        if not args.config:
            raise ValueError("--candidates search needs --config with the catalog, encoder and index sections")
        from retrieval.search import Searcher
        from synth_data.tasks import searcher_candidates

        searcher = Searcher.from_config(args.config)
        catalog = searcher.catalog
        candidates = searcher_candidates(searcher)
    report = generate(catalog, cfg, candidates=candidates, progress=not args.no_progress).to_dict()
    report.pop("reject_examples", None)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0 if report["accepted"] else 1


def _check(args: argparse.Namespace) -> int:
    from retrieval.catalog import Catalog
    from synth_data.grounding import check

    catalog = Catalog.load(args.catalog)
    if args.item_id not in catalog:
        raise ValueError(f"item {args.item_id!r} is not in the catalog at {args.catalog}")
    result = check(args.text, catalog[args.item_id], request=args.request)
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    return 0 if result.ok else 1
