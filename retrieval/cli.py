"""`whyrec data|encoder|index|search`: the retrieval stages from the command line.

Each handler is a thin wrapper over a plain Python call (importers.import_catalog,
encoders.lit.train_encoder, search.build_index, search.Searcher). Heavy imports stay inside the
handlers so `whyrec --help` is fast; bad input raises ValueError/FileNotFoundError, which
`api.cli` turns into a clear message and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

# the formats of retrieval.importers.IMPORTERS (listed here so --help need not import pandas;
# tests/retrieval/test_importers.py checks that the two agree)
IMPORT_FORMATS = ("hm", "amazon2023", "abo", "jsonl", "csv")


def register(sub: argparse._SubParsersAction) -> None:
    register_data(sub)

    enc = sub.add_parser("encoder", help="train encoder heads").add_subparsers(dest="encoder_command", required=True, metavar="ACTION")
    tr = enc.add_parser("train", help="train the configured encoder on the catalog's image-text pairs",
                        description="lit: projection heads (encoder_train.kind anchored|residual|linear) -> encoder.heads. "
                        "openclip: contrastive fine-tuning of the whole model -> OUT/model.pt. "
                        "--adapter: a residual adapter on the frozen encoder (any, zeroshot and openclip included) -> encoder.adapter.")
    tr.add_argument("--config", help="YAML config (catalog, encoder, encoder_train sections)")
    tr.add_argument("--catalog", help="catalog folder (overrides config)")
    tr.add_argument("--out", help="folder to write (default: encoder.heads, or encoder.adapter with --adapter)")
    tr.add_argument("--adapter", action="store_true", help="train a residual adapter on the frozen encoder's outputs")
    tr.add_argument("--kind", choices=["anchored", "residual", "linear"], help="lit head kind")
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--dim", type=int)
    tr.add_argument("--holdout", type=float, help="share of product groups held out for evaluation")
    tr.add_argument("--extra-catalog", action="append", metavar="DIR", help="mix another catalog's pairs into training (repeatable)")
    tr.add_argument("--cache-dir", help="tower feature cache folder")
    tr.set_defaults(func=cmd_encoder_train)

    cat = enc.add_parser("category", help="train a linear category head on frozen image vectors",
                         description="Fits the head on the catalog's image vectors (the configured encoder) -> product type, "
                         "prints top-1/3/5 accuracy and macro-F1 on held-out product groups, and saves it to encoder.category_head.")
    cat.add_argument("--config", required=True)
    cat.add_argument("--catalog", help="catalog folder (overrides config)")
    cat.add_argument("--out", help="folder to write (default: encoder.category_head of the config)")
    cat.add_argument("--field", help="label: an attribute name, or 'category' (default: product_type, else the last category level)")
    cat.add_argument("--holdout", type=float)
    cat.set_defaults(func=cmd_encoder_category)

    idx = sub.add_parser("index", help="build the FAISS index").add_subparsers(dest="index_command", required=True, metavar="ACTION")
    b = idx.add_parser("build", help="encode the catalog and build the index")
    b.add_argument("--config", required=True)
    b.add_argument("--no-fit-fusion", action="store_true", help="skip fitting the fusion weights (rankers then default to rrf)")
    b.add_argument("--vectors", metavar="FILE.npy", help="item vectors to index instead of encoding: one row per catalog id, "
                                                          "in catalog order, in the encoder's space (e.g. bench/million.py)")
    b.set_defaults(func=cmd_index_build)
    ff = idx.add_parser("fit-fusion", help="fit the dense/BM25/facts fusion of a built index from pseudo-queries (no labels)")
    ff.add_argument("--config", required=True)
    ff.add_argument("--queries", type=int, help="pseudo-queries to write (default: search.fusion_queries)")
    ff.set_defaults(func=cmd_index_fit_fusion)
    fr = idx.add_parser("fit-recommender", help="fit the served recommender (recommend.model) and save it beside the index, "
                                                "for `whyrec serve` to load (large catalogs cannot fit at start-up)")
    fr.add_argument("--config", required=True)
    fr.set_defaults(func=cmd_index_fit_recommender)
    em = idx.add_parser("embed", help="fill the tower feature cache for one shard of the catalog (several processes or GPUs share a build)",
                        description="Encodes the items of shard I of N (rows i, i+N, ...) into encoder.cache_dir, saving as it goes, "
                        "so a killed run resumes where it stopped. Run one per process (or `accelerate launch -m api.cli index embed`, "
                        "which takes I/N from RANK/WORLD_SIZE), then `whyrec index build` finds every feature cached.")
    em.add_argument("--config", required=True)
    em.add_argument("--shard", help="I/N (default: RANK/WORLD_SIZE from the environment, else 0/1)")
    em.set_defaults(func=cmd_index_embed)

    s = sub.add_parser("search", help="search the index with text and/or an image")
    s.add_argument("query", nargs="?", default=None, help="shopper's words")
    s.add_argument("--config", default="configs/demo.yaml")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--image", help="image file to search by (optionally steered by the query)")
    s.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help="category=..., colour=..., price=MIN..MAX")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--queries", help="file with one query per line; answers each as one JSON line")
    s.add_argument("--ranker", choices=["dense", "facts", "bm25", "rrf", "fitted"], help="default: fitted when fitted, else rrf")
    s.set_defaults(func=cmd_search)


def register_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="catalog data: import public formats into whyrec's Parquet catalog")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    imp = actions.add_parser(
        "import",
        help="import a catalog (H&M Kaggle, Amazon Reviews 2023, Amazon Berkeley Objects, plain JSONL/CSV)",
        description="Import a catalog and print a report of what was kept and which rows had problems "
        "(bad rows are counted with examples, never fatal). 'csv' is the plain schema, like 'jsonl'.",
    )
    imp.add_argument("format", choices=IMPORT_FORMATS)
    imp.add_argument("path", help="source file or folder")
    imp.add_argument("--out", required=True, metavar="DIR", help="catalog folder to write")
    imp.add_argument("--no-verify-images", action="store_true",
                     help="only check that image files exist, do not decode them (faster; broken files get through)")
    imp.add_argument("--local-image-dir", metavar="DIR",
                     help="where the images are (amazon2023: <parent_asin>.jpg or the URL's file name; "
                     "abo: the folder images.csv paths are relative to; hm: the NNN/ folders; jsonl: base of relative paths)")
    imp.add_argument("--reviews", metavar="FILE", help="amazon2023: reviews jsonl (default: <Category>.jsonl beside meta_<Category>.jsonl)")
    imp.add_argument("--images-csv", metavar="FILE", help="abo: images.csv(.gz) (default: found beside the listings)")
    imp.add_argument("--json", action="store_true", help="print the import report as JSON")
    imp.set_defaults(func=cmd_data_import)


def cmd_data_import(args) -> int:
    from retrieval.importers import import_catalog

    _, report = import_catalog(
        args.format, args.path, args.out,
        verify_images=not args.no_verify_images,
        local_image_dir=args.local_image_dir, reviews=args.reviews, images_csv=args.images_csv,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.summary())
        print(f"catalog written to {args.out}")
    return 0


def cmd_encoder_train(args) -> int:
    from dataclasses import replace

    from retrieval.catalog import Catalog
    from retrieval.config import load_yaml, section
    from retrieval.encoders import EncoderConfig
    from retrieval.encoders.lit import HeadTrainConfig
    from retrieval.search import CatalogConfig

    cfg = load_yaml(args.config)
    catalog = Catalog.load(args.catalog or section(cfg, "catalog", CatalogConfig).dir)
    enc = section(cfg, "encoder", EncoderConfig, cache_dir=args.cache_dir)
    command = "whyrec " + shlex.join(sys.argv[1:])
    extra = {"holdout": args.holdout, "epochs": args.epochs, "extra_catalogs": args.extra_catalog}
    if args.adapter:
        from retrieval.encoders import create_encoder
        from retrieval.encoders.adapter import train_adapter

        out = args.out or enc.adapter
        if not out:
            raise ValueError("give --out or encoder.adapter in the config")
        tcfg = section(cfg, "encoder_train", HeadTrainConfig, **extra)
        tcfg = replace(tcfg, kind="adapter")
        base = create_encoder(replace(enc, adapter=None))
        catalogs = [catalog] + [Catalog.load(d) for d in tcfg.extra_catalogs]
        meta = train_adapter(base, catalogs, out, tcfg, enc.threads, command=command)
        print(json.dumps({"adapter": str(out), **meta["stats"], "held_out_items": meta["held_out_items"]}))
        return 0
    if enc.name == "openclip":
        from retrieval.encoders.openclip import ClipTrainConfig, finetune_openclip

        if not args.out:
            raise ValueError("give --out: the folder the fine-tuned checkpoint (model.pt) goes to")
        tcfg = section(cfg, "encoder_train", ClipTrainConfig, **extra)
        catalogs = [catalog] + [Catalog.load(d) for d in tcfg.extra_catalogs]
        meta = finetune_openclip(catalogs, args.out, tcfg, enc.model, enc.pretrained, enc.model_config, enc.threads, command)
        print(json.dumps({"checkpoint": str(Path(args.out) / "model.pt"), **meta["stats"], "use_with": meta["use_with"]}))
        return 0
    if enc.name != "lit":
        raise ValueError(f"encoder {enc.name!r} has nothing to train itself; pass --adapter to train a residual adapter on it")
    from retrieval.encoders.lit import train_encoder

    out = args.out or enc.heads
    if not out:
        raise ValueError("give --out or encoder.heads in the config")
    tcfg = section(cfg, "encoder_train", HeadTrainConfig, kind=args.kind, dim=args.dim, **extra)
    meta = train_encoder(catalog, out, tcfg, enc.cache_dir, enc.threads, command=command)
    print(json.dumps({"heads": str(out), **meta["stats"], "held_out_items": meta["held_out_items"]}))
    return 0


def cmd_encoder_category(args) -> int:
    from retrieval.category_head import train_category_head_from_config

    report = train_category_head_from_config(args.config, catalog_dir=args.catalog, out=args.out, field=args.field,
                                             holdout=args.holdout, command="whyrec " + shlex.join(sys.argv[1:]))
    print(json.dumps(report, indent=1))
    return 0


def cmd_index_build(args) -> int:
    from retrieval.search import build_index

    from retrieval.config import load_yaml

    cfg = load_yaml(args.config)
    if args.no_fit_fusion:
        cfg.setdefault("search", {})["fit_fusion"] = False
    index = build_index(cfg, command="whyrec " + shlex.join(sys.argv[1:]), vectors=args.vectors)
    keys = ("factory", "n", "dim", "build_seconds", "recall_at_10", "vocabulary_seconds", "bm25_seconds", "fact_tables_seconds",
            "fusion_seconds", "fusion")
    print(json.dumps({k: index.meta[k] for k in keys if k in index.meta}))
    return 0


def cmd_index_fit_fusion(args) -> int:
    from retrieval.search import fit_index_fusion

    if args.queries is not None and args.queries < 10:
        raise ValueError("--queries must be at least 10")
    report = fit_index_fusion(args.config, args.queries)
    print(json.dumps({k: report[k] for k in ("settings", "fit_score", "held_out_scores", "queries", "seconds")}))
    return 0


def cmd_index_fit_recommender(args) -> int:
    from retrieval.recommenders.serve import fit_recommender

    print(json.dumps(fit_recommender(args.config)))
    return 0


def _hits_json(hits) -> list[dict]:
    return [{"id": h.id, "score": round(h.score, 5)} for h in hits]


def cmd_search(args) -> int:
    from retrieval.search import Searcher, parse_filters

    filters = parse_filters(args.filter)
    if not args.queries and not args.query and not args.image:
        raise ValueError("give a query, --image, or --queries FILE")
    if not 1 <= args.k <= 1000:
        raise ValueError("-k must be between 1 and 1000")
    searcher = Searcher.from_config(args.config)
    if args.queries:
        path = Path(args.queries)
        if not path.exists():
            raise FileNotFoundError(f"queries file {path} not found")
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                hits = searcher.search(line.strip(), args.k, filters, ranker=args.ranker)
                print(json.dumps({"query": line.strip(), "results": _hits_json(hits)}, ensure_ascii=False), flush=True)
        return 0
    if args.image:
        if not Path(args.image).is_file():
            raise FileNotFoundError(f"image {args.image} not found")
        hits = searcher.search_image(args.image, args.k, filters, text=args.query)
    else:
        hits = searcher.search(args.query, args.k, filters, ranker=args.ranker)
    if args.json:
        print(json.dumps({"query": args.query, "image": args.image, "results": _hits_json(hits)}, ensure_ascii=False))
        return 0
    print_table(searcher, hits)
    return 0


def print_table(searcher, hits) -> None:
    """Hits as a readable table: rank, score, id, title, colour, type, matched query words."""
    rows = [("#", "score", "id", "title", "colour", "type", "matched")]
    for n, h in enumerate(hits, 1):
        p = searcher.catalog.by_id[h.id]
        rows.append((str(n), f"{h.score:.3f}", h.id, p.title[:32], p.colour[:14], p.attributes.get("product_type", "")[:16], ", ".join(h.matched)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if not hits:
        print("(no results)")


def cmd_index_embed(args) -> int:
    from retrieval.search import embed_shard, parse_shard

    print(json.dumps(embed_shard(args.config, parse_shard(args.shard))))
    return 0
