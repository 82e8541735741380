"""`whyrec explain "request" ITEM_ID`: why an item fits a request, said only from catalog facts."""
from __future__ import annotations

import argparse
import importlib
import json
import os


def register(subparsers) -> None:
    p = subparsers.add_parser("explain", help="explain why a catalog item fits a request (grounded in its facts)")
    p.add_argument("request", help="the shopper's request, e.g. \"something black for the gym, not too tight\"")
    p.add_argument("item_id")
    p.add_argument("--catalog", help="catalog directory (default: the --config file's catalog.dir, "
                                      "else $WHYREC_CATALOG, else var/hm/catalog)")
    p.add_argument("--config", help="a YAML config with a catalog: section (configs/hm.yaml)")
    p.add_argument("--backend", default="grounded", help="explainer: grounded (default) or llava once a tuned model is set up")
    p.add_argument("--model", help="llava: a tune output, adapter or merged model dir, or a preset (default: $WHYREC_LLAVA_MODEL or var/tune/tiny-offline)")
    p.add_argument("--history", nargs="*", default=[], metavar="ITEM_ID", help="items the shopper bought before")
    p.add_argument("--score", type=float, help="the retrieval similarity of the item, if it came from a search")
    p.add_argument("--json", action="store_true", help="print JSON (text, backend, facts_used, grounding, evidence)")
    p.set_defaults(func=_explain)


def _explain(args: argparse.Namespace) -> int:
    from retrieval.catalog import Catalog
    from synth_data.explain import EXPLAINERS, checked_explain, gather_evidence, get_explainer
    from synth_data.grounding import check

    if args.backend not in EXPLAINERS:  # higher layers register their explainers when imported
        try:
            importlib.import_module("llava_tuning.explain")
        except ModuleNotFoundError as err:
            if err.name not in ("llava_tuning", "llava_tuning.explain"):
                raise
    explainer = get_explainer(args.backend, **({"model": args.model} if args.model else {}))
    catalog_dir = args.catalog
    if catalog_dir is None and args.config:
        from retrieval.config import load_yaml

        catalog_dir = (load_yaml(args.config).get("catalog") or {}).get("dir")
    catalog_dir = catalog_dir or os.environ.get("WHYREC_CATALOG", "var/hm/catalog")
    catalog = Catalog.load(catalog_dir)
    missing = [i for i in [args.item_id, *args.history] if i not in catalog]
    if missing:
        raise ValueError(f"item(s) {', '.join(missing)} not in the catalog at {catalog_dir}")
    product = catalog[args.item_id]
    history = [catalog[i] for i in args.history]
    evidence = gather_evidence(args.request, product, score=args.score, history=history)
    rationale = checked_explain(explainer, args.request, product, evidence)
    if not args.json:
        print(rationale.text)
        return 0
    grounding = check(rationale.text, product, request=args.request, sources=[h.title for h in history])
    print(json.dumps({"text": rationale.text, "backend": rationale.backend, "facts_used": rationale.facts_used,
                      "fallback_reason": rationale.fallback_reason, "item_id": product.id, "request": args.request,
                      "grounding": grounding.to_dict(), "evidence": evidence.to_dict()}, indent=2, ensure_ascii=False))
    return 0
