"""The full-size H&M data on one machine: a 31M-row transactions file in the Kaggle layout, its
streaming import, loading it, and serving it. Prints JSON; every phase runs in a fresh process so
its peak RSS (ru_maxrss) is its own.

    # 1. a synthetic transactions_train.csv (31M rows, ~1.3M shoppers, two years, skewed popularity)
    #    beside links to the real articles.csv and images (nothing is copied)
    python bench/import_bench.py generate --hm ../shared/data/hm --out var/bench/hm31m/source
    # 2. import (streaming) -> catalog; 3. load + histories + the served recommender's training data
    python bench/import_bench.py import --source var/bench/hm31m/source --out var/bench/hm31m/catalog
    python bench/import_bench.py load --catalog var/bench/hm31m/catalog
    # 4. `whyrec serve` on it (configs/bench-hm31m.yaml): start-up time, RSS, /users and /recommend
    python bench/import_bench.py serve --config configs/bench-hm31m.yaml
    # the 17k catalog: load time and memory (before/after: run with --code an older checkout)
    python bench/import_bench.py load --catalog var/hm/catalog [--code /tmp/old-checkout]

The machine is shared (2 cores): each result carries the load average when it started.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, os.environ.get("WHYREC_BENCH_CODE") or str(REPO))  # --code: another checkout's retrieval/

START = "2018-09-20"
DAYS = 734  # to 2020-09-22, as the Kaggle file


# ----------------------------------------------------------------------------- generate
def generate(hm: Path, out: Path, rows: int, users: int, seed: int, unknown_share: float, chunk_days: int) -> dict:
    """Write `out/transactions.csv` over the real H&M articles, with links to the real articles.csv
    and images (nothing is copied)."""
    import numpy as np
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    for name in ("articles.csv", "images", "customers.csv"):
        link = out / name
        if not link.exists():
            link.symlink_to((hm / name).resolve())
    articles = pd.read_csv(hm / "articles.csv", dtype=str, usecols=["article_id"])["article_id"].str.zfill(10).to_numpy()
    real_tx = pd.read_csv(hm / "transactions.csv", dtype={"article_id": str})
    price = real_tx.groupby("article_id")["price"].median().reindex(articles).to_numpy(np.float64, copy=True)
    real_customers = pd.read_csv(hm / "customers.csv", dtype=str, usecols=["customer_id"])["customer_id"].to_numpy()
    return write_transactions(out / "transactions.csv", articles, price, rows, users, seed, unknown_share, chunk_days, real_customers)


def write_transactions(path: Path, articles, price, rows: int, users: int, seed: int, unknown_share: float, chunk_days: int,
                       real_customers=()) -> dict:
    """A synthetic transactions_train.csv (t_dat, customer_id, article_id, price, sales_channel_id)
    over `articles` (ids; `price`: each one's price, NaN = drawn), in date order like the Kaggle
    file: Zipf-like popularity drifting over two years, lognormal shopper activity, baskets of 1-10
    items, and `unknown_share` of rows on articles the catalog lacks (the import drops them)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv

    t0 = time.time()
    rng = np.random.default_rng(seed)
    articles = np.asarray(articles, object)
    price = np.asarray(price, np.float64).copy()
    price[np.isnan(price)] = np.exp(rng.normal(np.log(0.025), 0.6, int(np.isnan(price).sum())))
    # unknown articles (not in articles.csv): a small share of rows, counted and dropped by the import
    unknown = np.array([f"09{n:08d}" for n in range(1000)], object)
    art_ids = pa.array(np.r_[articles, unknown], pa.string())
    n_items = len(articles)
    # popularity: Zipf-like over a random order of the articles, drifting over time (new items rise)
    rank = rng.permutation(n_items)
    pop = 1.0 / (rank + 10.0) ** 1.05
    launch = rng.integers(-DAYS, DAYS, n_items)  # an article sells from its launch day on
    # shoppers: the real ids given + synthetic 64-hex ids; activity lognormal (a few very active)
    real_customers = np.asarray(real_customers, object)
    n_syn = users - len(real_customers)
    hexes = rng.bytes(32 * n_syn).hex()
    syn = [hexes[64 * i: 64 * (i + 1)] for i in range(n_syn)]
    cust_ids = pa.array(np.r_[real_customers, np.array(syn, object)], pa.string())
    del hexes, syn
    activity = rng.lognormal(0.0, 1.2, users)
    activity /= activity.sum()
    cum_activity = np.cumsum(activity)
    # rows per day: growth plus a weekly and a yearly season
    d = np.arange(DAYS)
    per_day = (1 + d / DAYS) * (1 + 0.15 * np.sin(2 * np.pi * d / 7)) * (1 + 0.3 * np.sin(2 * np.pi * (d - 120) / 365))
    per_day = np.floor(per_day / per_day.sum() * rows).astype(np.int64)
    per_day[-1] += rows - per_day.sum()
    dates = pa.array(pd.date_range(START, periods=DAYS).strftime("%Y-%m-%d").to_numpy(object), pa.string())
    tmp = path.with_suffix(".partial")
    written = 0
    with open(tmp, "wb") as fh:  # the Kaggle header, unquoted
        fh.write(b"t_dat,customer_id,article_id,price,sales_channel_id\n")
    with open(tmp, "ab") as sink, pacsv.CSVWriter(sink, pa.schema([("t_dat", pa.string()), ("customer_id", pa.string()), ("article_id", pa.string()),
                                              ("price", pa.float64()), ("sales_channel_id", pa.int8())]),
                         write_options=pacsv.WriteOptions(quoting_style="none", include_header=False)) as w:
        for s in range(0, DAYS, chunk_days):
            days = np.arange(s, min(DAYS, s + chunk_days))
            n = int(per_day[days].sum())
            day = np.repeat(days, per_day[days])
            # baskets: a shopper buys 1-10 items (geometric) on a day
            sizes = rng.geometric(0.35, n)
            shopper_per_basket = np.searchsorted(cum_activity, rng.random(n), side="right").clip(0, users - 1)
            basket = np.repeat(np.arange(n), sizes)[:n]
            user = shopper_per_basket[basket]
            live = pop * 0.0
            item = np.empty(n, np.int64)
            for dd in days:  # popularity among the articles already launched, newest boosted
                m = day == dd
                live = np.where(launch <= dd, pop * (1 + 3 * (launch > dd - 60)), 0.0)
                cum = np.cumsum(live / live.sum())
                item[m] = np.searchsorted(cum, rng.random(int(m.sum())), side="right").clip(0, n_items - 1)
            unk = rng.random(n) < unknown_share
            item_code = np.where(unk, n_items + rng.integers(0, len(unknown), n), item)
            paid = np.where(unk, 0.02, price[np.minimum(item, n_items - 1)] * np.where(rng.random(n) < 0.2, 0.7, 1.0))
            table = pa.table({"t_dat": dates.take(pa.array(day)), "customer_id": cust_ids.take(pa.array(user)),
                              "article_id": art_ids.take(pa.array(item_code)), "price": pa.array(np.round(paid, 16)),
                              "sales_channel_id": pa.array(rng.choice(np.array([1, 2], np.int8), n, p=[0.3, 0.7]))})
            w.write_table(table)
            written += n
            print(f"generated {written:,} / {rows:,} rows", file=sys.stderr, flush=True)
    os.replace(tmp, path)
    return {"phase": "generate", "rows": written, "shoppers": users, "items": n_items, "unknown_share": unknown_share,
            "days": DAYS, "bytes": path.stat().st_size, "seconds": round(time.time() - t0, 1)}


# ----------------------------------------------------------------------------- measured phases
def peak_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cpu_s() -> float:
    """CPU seconds (user + system) of this process: on a shared machine, wall time says less."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return round(r.ru_utime + r.ru_stime, 1)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def do_import(source: Path, out: Path) -> dict:
    from retrieval.importers import import_catalog

    base = rss_mb()
    t0 = time.time()
    _, report = import_catalog("hm", source, out, verify_images=False)
    return {"phase": "import", "seconds": round(time.time() - t0, 1), "cpu_s": cpu_s(), "peak_rss_mb": peak_mb(), "rss_before_mb": base,
            "rows_read": report.interaction_rows_read, "interactions": report.interactions, "products": report.products,
            "problems": report.problems, "parquet_mb": round((out / "interactions.parquet").stat().st_size / 2**20, 1)}


def do_load(catalog_dir: Path) -> dict:
    """Catalog.load, then the interactions, their histories and the served recommender's training data."""
    import gc

    from retrieval.catalog import Catalog

    base = rss_mb()
    out: dict = {"phase": "load", "catalog": str(catalog_dir), "rss_before_mb": base}
    t0 = time.time()
    c = Catalog.load(catalog_dir)
    inter = c.interactions
    out.update(products=len(c), interactions=len(inter), load_s=round(time.time() - t0, 2))
    gc.collect()
    out["rss_after_load_mb"] = rss_mb()
    out["peak_after_load_mb"] = peak_mb()
    if hasattr(inter, "histories"):
        t = time.time()
        h = inter.histories()
        out["histories_s"] = round(time.time() - t, 2)
        out["shoppers"] = len(h)
        t = time.time()
        _ = inter.by_activity, inter.last_days
        out["users_ranking_s"] = round(time.time() - t, 2)
        from retrieval.recommenders.data import TrainData

        t = time.time()
        merged = inter.merged_same_day()
        data = TrainData.from_interactions(merged, c.ids, c.row)
        out["train_data_s"] = round(time.time() - t, 2)
        out["purchases_merged"] = len(data.rows_item)
        del merged
    else:  # the old list of Interaction objects: the histories as the old Searcher built them
        t = time.time()
        events: dict = {}
        for k, it in enumerate(inter):
            events.setdefault(it.user, []).append((it.timestamp, k, it.item))
        hist = {u: [x for _, _, x in sorted(ev)] for u, ev in events.items()}
        out["histories_s"] = round(time.time() - t, 2)
        out["shoppers"] = len(hist)
    gc.collect()
    out["rss_end_mb"] = rss_mb()
    out["cpu_s"] = cpu_s()
    out["peak_rss_mb"] = peak_mb()
    return out


def do_fit(catalog_dir: Path, config: str, model: str) -> dict:
    """Fit one `recommend.models` entry on every purchase, as the service does at start-up."""
    from retrieval.catalog import Catalog
    from retrieval.config import load_yaml, section
    from retrieval.recommenders.factory import RecommendConfig, create_recommender
    from retrieval.recommenders.context import ModelContext
    from retrieval.recommenders.data import TrainData

    rc = section(load_yaml(config), "recommend", RecommendConfig)
    c = Catalog.load(catalog_dir)
    t = time.time()
    data = TrainData.from_interactions(c.interactions.merged_same_day(), c.ids, c.row)
    prep = time.time() - t
    ctx = ModelContext.from_catalog(c, None, None)
    t = time.time()
    m = create_recommender(model, rc.models, ctx).fit(data)
    fit = time.time() - t
    h = data.histories(data.users[:200])
    t = time.time()
    for x in h:
        m.score_histories([x])
    return {"phase": "fit", "model": model, "purchases": len(data.rows_item), "train_data_s": round(prep, 1), "fit_s": round(fit, 1),
            "score_one_ms": round((time.time() - t) / len(h) * 1000, 2), "cpu_s": cpu_s(), "peak_rss_mb": peak_mb()}


def do_serve(config: str, timeout: float, port: int) -> dict:
    """Start `whyrec serve` on the config, wait for /health, query /users and /recommend, stop it."""
    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "api.cli", "serve", "--config", config, "--port", str(port)]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: dict = {"phase": "serve", "config": config, "command": " ".join(cmd[1:])}
    base = f"http://127.0.0.1:{port}"
    peak = 0.0
    try:
        while time.time() - t0 < timeout:
            peak = max(peak, _proc_rss_mb(proc.pid))
            if proc.poll() is not None:
                out["error"] = f"server exited {proc.returncode}: " + (proc.stdout.read() or "")[-2000:]
                return out
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            out["error"] = f"not up after {timeout:.0f}s"
            return out
        out["startup_s"] = round(time.time() - t0, 1)
        out["rss_after_start_mb"] = _proc_rss_mb(proc.pid)
        out["server_cpu_at_start"] = subprocess.run(["ps", "-o", "times=", "-p", str(proc.pid)], capture_output=True, text=True).stdout.strip()
        out["health"] = httpx.get(base + "/health", timeout=10).json()
        lat = []
        for _ in range(5):
            t = time.perf_counter()
            users = httpx.get(base + "/users", params={"limit": 50}, timeout=30).json()
            lat.append((time.perf_counter() - t) * 1000)
        out["users_ms"] = [round(x, 1) for x in lat]
        rec_lat = []
        for u in users[:10]:
            t = time.perf_counter()
            r = httpx.post(base + "/recommend", json={"user_id": u["id"], "k": 12}, timeout=60)
            rec_lat.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
        out["recommend_ms"] = [round(x, 1) for x in rec_lat]
        out["top_shopper"] = users[0] if users else None
        out["peak_rss_mb"] = max(peak, _proc_rss_mb(proc.pid))
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _proc_rss_mb(pid: int) -> float:
    """RSS of a process and its children (uvicorn may fork)."""
    total = 0.0
    try:
        out = subprocess.run(["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)], capture_output=True, text=True).stdout
        total = sum(int(x) for x in out.split()) / 1024
    except (OSError, ValueError):
        pass
    return round(total, 1)


def in_fresh_process(args: list[str], code: str | None) -> dict:
    """Run one phase in a new interpreter (its own peak RSS), optionally with another checkout's code."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": code or str(REPO), "WHYREC_BENCH_CODE": code or str(REPO)}
    load = [round(x, 2) for x in os.getloadavg()]
    r = subprocess.run([sys.executable, __file__, "_phase", *args], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"phase {args[0]} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["load_average_at_start"] = load
    if code:
        res["code"] = code
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--hm", default=str(REPO.parent / "shared" / "data" / "hm"))
    g.add_argument("--out", default="var/bench/hm31m/source")
    g.add_argument("--rows", type=int, default=31_000_000)
    g.add_argument("--users", type=int, default=1_300_000)
    g.add_argument("--unknown-share", type=float, default=0.002)
    g.add_argument("--chunk-days", type=int, default=14)
    g.add_argument("--seed", type=int, default=0)
    i = sub.add_parser("import")
    i.add_argument("--source", default="var/bench/hm31m/source")
    i.add_argument("--out", default="var/bench/hm31m/catalog")
    lo = sub.add_parser("load")
    lo.add_argument("--catalog", default="var/bench/hm31m/catalog")
    lo.add_argument("--code", default=None, help="another checkout's root (before/after): its retrieval/ is measured")
    f = sub.add_parser("fit", help="fit one recommend.models entry on every purchase (what start-up does)")
    f.add_argument("--catalog", default="var/bench/hm31m/catalog")
    f.add_argument("--config", default="configs/bench-hm31m.yaml")
    f.add_argument("--model", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--config", default="configs/bench-hm31m.yaml")
    s.add_argument("--timeout", type=float, default=900)
    s.add_argument("--port", type=int, default=8731)
    p = sub.add_parser("_phase")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = ap.parse_args()

    if args.cmd == "_phase":
        name, *rest = args.rest
        if name == "import":
            res = do_import(Path(rest[0]), Path(rest[1]))
        elif name == "fit":
            res = do_fit(Path(rest[0]), rest[1], rest[2])
        else:
            res = do_load(Path(rest[0]))
        print(json.dumps(res))
        return
    load = [round(x, 2) for x in os.getloadavg()]
    if args.cmd == "generate":
        res = generate(Path(args.hm), Path(args.out), args.rows, args.users, args.seed, args.unknown_share, args.chunk_days)
        res["load_average_at_start"] = load
    elif args.cmd == "import":
        res = in_fresh_process(["import", args.source, args.out], None)
    elif args.cmd == "fit":
        res = in_fresh_process(["fit", args.catalog, args.config, args.model], None)
    elif args.cmd == "load":
        res = in_fresh_process(["load", args.catalog], args.code)
    else:
        res = do_serve(args.config, args.timeout, args.port)
        res["load_average_at_start"] = load
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
