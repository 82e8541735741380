"""A second fashion shop with other column names: search precision with titles, without titles and
descriptions, and from photos alone.

Exports a ~4,000-product subset of the H&M sample (every item the demo heads held out of training,
then a seeded sample of the others) as a plain CSV whose attribute columns are renamed the way
another shop names them (articleType, baseColour, colourFamily, print, masterCategory, division,
line), imports it with `whyrec data import csv`, builds its index with `whyrec index build`, and
runs `whyrec eval search` with eval/queries/shop2.yaml, whose rules use those column names:

    python bench/second_shop.py --config configs/hm.yaml [--n 4000] [--out var/shop2]

Variants: `titles` (title + description kept), `no_titles` (both emptied; the importer then titles
an item with its id), and `photos` (`--blank-text` on the titles variant: every text blanked,
item vectors from images only). Prints one JSON object; writes each variant's full result beside
its catalog.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# the shop's column -> H&M articles.csv column
COLUMNS = {
    "articleType": "product_type_name",
    "masterCategory": "product_group_name",
    "baseColour": "colour_group_name",
    "colourFamily": "perceived_colour_master_name",
    "print": "graphical_appearance_name",
    "division": "index_group_name",
    "line": "garment_group_name",
}


def choose_items(articles: list[dict], held_out: set[str], n: int, seed: int = 0) -> list[dict]:
    """Every held-out article first (the heads never saw them), then a seeded sample of the rest up to n."""
    held = [a for a in articles if a["article_id"] in held_out]
    rest = [a for a in articles if a["article_id"] not in held_out]
    rng = np.random.default_rng(seed)
    take = max(0, n - len(held))
    extra = [rest[i] for i in sorted(rng.choice(len(rest), size=min(take, len(rest)), replace=False))] if take else []
    return (held[:n] + extra)[:n]


def export_csv(hm_dir: Path, held_out: set[str], n: int, out: Path, titles: bool, seed: int = 0) -> dict:
    """Write the shop's products.csv (plain schema names for id/title/description/image)."""
    with open(hm_dir / "articles.csv", newline="", encoding="utf-8") as f:
        articles = [{k: (v or "").strip() for k, v in row.items()} for row in csv.DictReader(f)]
    for a in articles:
        a["article_id"] = a["article_id"].zfill(10)
    items = choose_items(articles, held_out, n, seed)
    out.mkdir(parents=True, exist_ok=True)
    images = (hm_dir / "images").resolve()
    with open(out / "products.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "description", "image", *COLUMNS])
        for a in items:
            aid = a["article_id"]
            w.writerow([aid, a["prod_name"] if titles else "", a["detail_desc"] if titles else "",
                        str(images / aid[:3] / f"{aid}.jpg"), *(a[c] for c in COLUMNS.values())])
    return {"items": len(items), "held_out_items": sum(a["article_id"] in held_out for a in items)}


def whyrec(*args: str) -> None:
    """Run a `whyrec` subcommand as a user would (this checkout first on the path)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run([sys.executable, "-m", "api.cli", *args], check=True, cwd=REPO, env=env, stdout=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/hm.yaml", help="H&M config: its catalog.source, encoder and search sections are used")
    ap.add_argument("--hm-dir", help="H&M Kaggle folder (default: the config's catalog.source)")
    ap.add_argument("--heads-dir", default="data/demo/heads", help="heads whose held_out_ids.txt names the items to take first")
    ap.add_argument("--queries", default="eval/queries/shop2.yaml")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--out", default="var/shop2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="titles,no_titles,photos")
    ap.add_argument("--skip-build", action="store_true", help="reuse catalogs and indexes already under --out")
    args = ap.parse_args()

    from eval.search_eval import SearchEvalConfig, run_search_eval
    from retrieval.config import load_yaml

    base = load_yaml(args.config)
    hm_dir = Path(args.hm_dir or (base.get("catalog") or {}).get("source") or "../shared/data/hm")
    if not (hm_dir / "articles.csv").exists():
        raise FileNotFoundError(f"no H&M articles.csv under {hm_dir} (give --hm-dir)")
    held_path = Path(args.heads_dir) / "held_out_ids.txt"
    held_out = set(held_path.read_text().split()) if held_path.exists() else set()
    order = ("titles", "no_titles", "photos")
    variants = sorted({v.strip() for v in args.variants.split(",") if v.strip()}, key=lambda v: order.index(v) if v in order else 9)
    unknown = [v for v in variants if v not in order]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; use {', '.join(order)}")
    out = Path(args.out)
    report: dict = {"source": str(hm_dir), "columns": COLUMNS, "queries": args.queries}
    for variant in variants:
        source = "titles" if variant == "photos" else variant
        folder = out / source
        cfg_path = folder / "config.yaml"
        if not args.skip_build and not (variant == "photos" and "titles" in variants):
            shop = export_csv(hm_dir, held_out, args.n, folder, titles=(source == "titles"), seed=args.seed)
            report.setdefault("shop", shop)
            whyrec("data", "import", "csv", str(folder / "products.csv"), "--out", str(folder / "catalog"), "--no-verify-images")
            cfg = {"catalog": {"dir": str(folder / "catalog"), "source": str(folder / "products.csv"), "format": "csv"},
                   "encoder": base.get("encoder") or {}, "index": {**(base.get("index") or {}), "dir": str(folder / "index")},
                   "search": base.get("search") or {}}
            import yaml

            cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
            whyrec("index", "build", "--config", str(cfg_path))
        result = run_search_eval(SearchEvalConfig(str(cfg_path), args.queries, blank_text=(variant == "photos")))
        (folder / f"result-{variant}.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
        report[variant] = {"results": result["results"], "ceiling_p@10": result["ceiling_p@10"], "queries": result["queries"],
                           "queries_without_relevant_items": result.get("queries_without_relevant_items", []),
                           "ranker_interface": result["ranker_interface"]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
