"""`whyrec data ...` (and, later, the other retrieval stages) from the command line.

Each handler is a thin wrapper over a plain Python call (`importers.import_catalog`). Heavy imports
stay inside the handlers so `whyrec --help` is fast; bad input raises ValueError/FileNotFoundError,
which `api.cli` turns into a clear message and exit code 2.
"""
from __future__ import annotations

import argparse
import json

# the formats of retrieval.importers.IMPORTERS (listed here so --help need not import pandas;
# tests/retrieval/test_importers.py checks that the two agree)
IMPORT_FORMATS = ("hm", "amazon2023", "abo", "jsonl", "csv")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the retrieval subcommands to the `whyrec` parser."""
    register_data(sub)


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
