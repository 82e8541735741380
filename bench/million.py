"""A 1M-product catalog without encoding for hours: H&M products copied with perturbed ids, text,
colours and prices, and vectors that are perturbed copies of the real H&M item vectors; then its
index built with `whyrec index build --vectors`, timed, with the build's peak memory.

Each copy r >= 1 of a product gets the id `<id>-<r>`, its own group, a word before its title and
a sentence after its description (from small fixed lists), its price times U(0.8, 1.25), and with
probability --recolour the colour facts (colour, colour_master, colour_value) of another product;
its vector is the source's (mixed 60/40 with the colour donor's when recoloured) plus Gaussian
noise (--noise: cosine to the source ~0.95), renormalised. Copy 0 is the real catalog, so its
purchases (the real ones) still point at real items. Photos are shared with the source item.

    OMP_NUM_THREADS=1 python bench/million.py --source-config configs/hm.yaml --out var/m1 [--items 1000000] \
        [--purchases 31788324] [--recommend-model hybrid]
    # then serve it, load-test it and reload it (start time, RSS at start and during the reload):
    OMP_NUM_THREADS=1 python bench/load_test.py --config var/m1/config.yaml --duration 20 --concurrency 1,4

--purchases N replaces the real purchases with N synthetic ones over all the items, in the Kaggle
transactions layout (bench/import_bench.py's generator: Zipf-like drifting popularity, 1.37M
lognormal shoppers, same-day baskets), imported through the streaming H&M reader in its own
measured process (--skip-make --skip-build --skip-fit --purchases N adds them to a made catalog).

After the index build (vectors, vocabulary, BM25, the search fact tables) it runs `whyrec index
fit-recommender`: the served recommender is fitted once and saved beside the index, and `whyrec
serve` restores it (a 1M catalog cannot fit at start-up; see retrieval/recommenders/saved.py).
The written config turns off the ranker's photo features (the image tower's 1308-d features of
every item: 5 GB at 1M). --recommend-model picks another served model: the ranker's offline fit
scores every catalog item for each of ~4,000 training histories (200k items: 10 min; 1M: over an
hour, extrapolated), so the 1M run serves the hybrid (repeat, tf-idf kNN, ALS, recent popularity).

Measured at 1M with 31.8M purchases (2026-12-01, load 1-2.3; README "Numbers" has the served
figures): make 22 s; purchases written in 46 s (3.4 GB CSV) and imported in 193 s at peak 1.5 GB
(31,756,372 kept, 31,952 on unknown articles dropped); index build 291 s, peak 6.4 GB
(IVF4096-PQ128x4fs-RFlat recall@10 0.977; vocabulary 33 s, BM25 52 s, fact tables 164 s);
fit-recommender (hybrid) 1111 s, peak 8.6 GB: ALS etc. 443 s, then the tf-idf neighbour rows of
the 20k most bought items 614 s (before those rows were made as weighted sums of X^T's rows, which
is 4.5x faster), 741 MB saved.

Writes OUT/catalog, OUT/vectors.npy, OUT/config.yaml (the source config, pointed at OUT) and
OUT/index; prints one JSON object (sizes, seconds, peak RSS of the build process).
"""
from __future__ import annotations

import argparse
import json
import os
import gc
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
TITLE_WORDS = ["Soft", "Classic", "Relaxed", "Everyday", "Light", "Essential", "Modern", "Easy", "Fine", "Clean"]
DESCRIPTION_SENTENCES = ["Made to last.", "A new favourite.", "Easy to wear.", "Part of the basics range.",
                         "Comes in several colours.", "Designed in Stockholm.", "Goes with everything.", ""]
COLOUR_KEYS = ("colour", "colour_master", "colour_value")


def source_vectors(index_dir: Path, ids: list[str]) -> np.ndarray:
    """The live index version's vectors, in catalog order."""
    version = index_dir / (index_dir / "CURRENT").read_text().strip()
    vecs = np.load(version / "vectors.npy")
    row = {str(i): n for n, i in enumerate(np.load(version / "ids.npy", allow_pickle=True))}
    missing = [i for i in ids if i not in row]
    if missing:
        raise ValueError(f"the source index lacks {len(missing)} catalog items (e.g. {missing[:3]}); rebuild it first")
    return vecs[[row[i] for i in ids]].astype(np.float32)


def make_catalog(src_catalog: Path, src_index: Path, out: Path, items: int, noise: float, recolour: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    base = pd.read_parquet(src_catalog / "products.parquet")
    n0 = len(base)
    vecs0 = source_vectors(src_index, base["id"].astype(str).tolist())
    copies = int(np.ceil(items / n0))
    src = np.tile(np.arange(n0), copies)[:items]
    copy = np.repeat(np.arange(copies), n0)[:items]
    fresh = copy > 0
    frame = base.iloc[src].reset_index(drop=True)
    suffix = np.where(fresh, "-" + copy.astype(str), "")
    frame["id"] = frame["id"].astype(str).to_numpy(object) + suffix
    frame["group_id"] = frame["group_id"].astype(str).to_numpy(object) + suffix
    words = np.array(TITLE_WORDS, object)[rng.integers(0, len(TITLE_WORDS), items)]
    frame["title"] = np.where(fresh, words + " " + frame["title"].astype(str).str.lower(), frame["title"])
    sentences = np.array(DESCRIPTION_SENTENCES, object)[rng.integers(0, len(DESCRIPTION_SENTENCES), items)]
    frame["description"] = np.where(fresh, (frame["description"].astype(str) + " " + sentences).str.strip(), frame["description"])
    frame["price"] = np.where(fresh, frame["price"].to_numpy() * rng.uniform(0.8, 1.25, items), frame["price"])

    donor = np.full(items, -1)
    swap = fresh & (rng.random(items) < recolour)
    donor[swap] = rng.integers(0, n0, int(swap.sum()))
    attrs0 = [json.loads(a) for a in base["attributes"]]
    colours0 = base["colour"].astype(str).to_numpy(object)
    attributes = frame["attributes"].to_numpy(object).copy()
    colour = frame["colour"].to_numpy(object).copy()
    for i in np.flatnonzero(swap):
        a = dict(attrs0[src[i]])
        for key in COLOUR_KEYS:
            if key in attrs0[donor[i]]:
                a[key] = attrs0[donor[i]][key]
        attributes[i] = json.dumps(a, ensure_ascii=False, sort_keys=True)
        colour[i] = colours0[donor[i]]
    frame["attributes"] = attributes
    frame["colour"] = colour

    vectors = np.empty((items, vecs0.shape[1]), np.float32)
    sigma = noise / np.sqrt(vecs0.shape[1])
    for s in range(0, items, 100_000):
        e = min(items, s + 100_000)
        v = vecs0[src[s:e]].copy()
        d = donor[s:e]
        mixed = d >= 0
        v[mixed] = 0.6 * v[mixed] + 0.4 * vecs0[d[mixed]]
        v[fresh[s:e]] += sigma * rng.standard_normal((int(fresh[s:e].sum()), v.shape[1])).astype(np.float32)
        vectors[s:e] = v / np.linalg.norm(v, axis=1, keepdims=True)

    (out / "catalog").mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out / "catalog" / "products.parquet", index=False)
    inter = src_catalog / "interactions.parquet"
    if inter.exists():  # copy 0 keeps the real ids: the real purchases stay valid
        pd.read_parquet(inter).to_parquet(out / "catalog" / "interactions.parquet", index=False)
    np.save(out / "vectors.npy", vectors)
    cos = np.sum(vectors[n0: n0 + 10_000] * vecs0[src[n0: n0 + 10_000]], axis=1) if items > n0 else np.ones(1)
    return {"items": items, "source_items": n0, "copies": copies, "recoloured": int(swap.sum()),
            "cosine_to_source_p50": round(float(np.median(cos)), 4), "dim": int(vectors.shape[1])}


def write_purchases(out: Path, rows: int, shoppers: int, seed: int) -> dict:
    """OUT/purchases/transactions.csv: `rows` synthetic purchases in the Kaggle layout over every
    product of OUT/catalog (bench/import_bench.py's generator: Zipf-like drifting popularity,
    lognormal shoppers, baskets), the real H&M shoppers' ids among them."""
    sys.path.insert(0, str(REPO / "bench"))
    from import_bench import write_transactions

    products = pd.read_parquet(out / "catalog" / "products.parquet", columns=["id", "price"])
    path = out / "purchases" / "transactions.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    res = write_transactions(path, products["id"].astype(str).to_numpy(object), products["price"].to_numpy(np.float64),
                             rows, shoppers, seed, unknown_share=0.001, chunk_days=30)
    res["csv_mb"] = round(path.stat().st_size / 2**20, 1)
    return res


def import_purchases(csv: Path, catalog_dir: Path) -> dict:
    """Stream a Kaggle-layout transactions file into catalog_dir/interactions.parquet (the H&M
    importer's reader: bounded memory), replacing the purchases there; the prices stay the catalog's."""
    from retrieval.artifacts import atomic_path
    from retrieval.importers import ImportReport, stream_hm_transactions
    from retrieval.catalog import INTERACTIONS_FILE
    from retrieval.interactions import InteractionWriter

    t0 = time.time()
    ids = pd.read_parquet(catalog_dir / "products.parquet", columns=["id"])["id"].astype(str).tolist()
    report = ImportReport("hm", str(csv))
    with atomic_path(catalog_dir / INTERACTIONS_FILE) as tmp, InteractionWriter(tmp) as writer:
        stream_hm_transactions(csv, ids, report, writer)
    return {"rows_read": report.interaction_rows_read, "interactions": writer.rows, "problems": report.to_dict().get("problems"),
            "seconds": round(time.time() - t0, 1)}


def run_measured(cmd: list[str], log_path: Path) -> tuple[float, int, str]:
    """Run a whyrec command (OMP_NUM_THREADS=1 unless set), sampling its resident size; (seconds, peak RSS bytes, stdout)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        peak = 0
        while proc.poll() is None:  # the command's resident size, sampled (its stderr: log_path)
            try:
                peak = max(peak, psutil.Process(proc.pid).memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.5)
        stdout = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd[1:])} failed ({proc.returncode}); see {log_path}")
    return round(time.time() - t0, 1), peak, stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source-config", default="configs/hm.yaml", help="config of the real catalog and its built index")
    ap.add_argument("--out", default="var/m1")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--noise", type=float, default=0.33, help="Gaussian noise norm added to each copied vector")
    ap.add_argument("--recolour", type=float, default=0.3, help="share of copies that take another product's colour")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fit-fusion", action="store_true", help="also fit the fusion weights (slow at 1M: a Searcher is built for it)")
    ap.add_argument("--skip-make", action="store_true", help="reuse OUT/catalog and OUT/vectors.npy")
    ap.add_argument("--skip-build", action="store_true", help="reuse OUT/index too (only fit the recommender)")
    ap.add_argument("--purchases", type=int, default=0,
                    help="write this many synthetic purchases over the 1M items (Kaggle layout) and import them "
                         "(0: keep the real H&M purchases, which point at copy 0)")
    ap.add_argument("--shoppers", type=int, default=1_371_980, help="shoppers in the synthetic purchases (the Kaggle file's count)")
    ap.add_argument("--import-purchases", metavar="CSV", help=argparse.SUPPRESS)  # the measured import step's own process
    ap.add_argument("--skip-fit", action="store_true", help="stop after the index build (fit the recommender later)")
    ap.add_argument("--recommend-model", help="serve this recommend.models entry instead of the source config's "
                                              "(the ranker's offline fit scores every catalog item for thousands of histories)")
    args = ap.parse_args()
    if args.import_purchases:
        print(json.dumps(import_purchases(Path(args.import_purchases), Path(args.out) / "catalog")))
        return

    from retrieval.config import load_yaml

    cfg = load_yaml(args.source_config)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"source_config": args.source_config, "out": str(out), "cpus": os.cpu_count()}
    t0 = time.time()
    if not args.skip_make:
        report["catalog"] = make_catalog(Path(cfg["catalog"]["dir"]), Path(cfg["index"]["dir"]), out, args.items, args.noise,
                                         args.recolour, args.seed)
    report["make_seconds"] = round(time.time() - t0, 1)
    if args.purchases:
        report["purchases"] = write_purchases(out, args.purchases, args.shoppers, args.seed)
        gc.collect()
        seconds, peak, stdout = run_measured([sys.executable, str(Path(__file__).resolve()), "--out", str(out),
                                              "--import-purchases", str(out / "purchases" / "transactions.csv")],
                                             out / "import_purchases.log")
        report["import_purchases"] = json.loads(stdout.strip().splitlines()[-1])
        report["import_purchases_peak_rss_mb"] = round(peak / 2**20, 1)
    cfg["catalog"] = {**cfg["catalog"], "dir": str(out / "catalog")}
    cfg["catalog"].pop("source", None)
    cfg["index"] = {**cfg["index"], "dir": str(out / "index")}
    # photo similarity in the ranker would hold the image tower's 1308-d features of every item (5 GB at 1M)
    cfg.setdefault("recommend", {})["image_features"] = False
    if args.recommend_model:
        cfg["recommend"]["model"] = args.recommend_model
    config = out / "config.yaml"
    config.write_text(f"# made by: python bench/million.py {shlex.join(sys.argv[1:])}\n" + yaml.safe_dump(cfg, sort_keys=False))

    cmd = [sys.executable, "-m", "api.cli", "index", "build", "--config", str(config), "--vectors", str(out / "vectors.npy")]
    if not args.fit_fusion:
        cmd.append("--no-fit-fusion")
    gc.collect()  # the made catalog's frames: not held while the build runs
    for step, command in (("build", cmd), ("fit_recommender", [sys.executable, "-m", "api.cli", "index", "fit-recommender", "--config", str(config)])):
        if (step == "build" and args.skip_build) or (step == "fit_recommender" and args.skip_fit):
            continue
        seconds, peak, stdout = run_measured(command, out / f"{step}.log")
        report[f"{step}_seconds"] = seconds
        report[step] = json.loads(stdout.strip().splitlines()[-1])
        report[f"{step}_peak_rss_mb"] = round(peak / 2**20, 1)
        report[f"{step}_command"] = shlex.join(command)
    report["config"] = str(config)
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
