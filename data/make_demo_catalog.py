"""Cut the bundled demo catalog (data/demo) out of the H&M data in ../shared/data/hm.

Picks the purchases of a few shoppers (so /recommend has histories to show) plus items spread
over product types and colours, copies their rows and photos, and keeps the Kaggle layout so the
ordinary `whyrec data import hm` reads it. Rerun: python data/make_demo_catalog.py
"""
import argparse
import shutil
from pathlib import Path

import pandas as pd

p = argparse.ArgumentParser()
p.add_argument("--source", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hm"))
p.add_argument("--out", default=str(Path(__file__).resolve().parent / "demo"))
p.add_argument("--shoppers", type=int, default=12)
p.add_argument("--items", type=int, default=400)
args = p.parse_args()
src, out = Path(args.source), Path(args.out)

articles = pd.read_csv(src / "articles.csv", dtype=str)
tx = pd.read_csv(src / "transactions.csv", dtype={"article_id": str})
counts = tx.groupby("customer_id").size()
shoppers = counts[(counts >= 8) & (counts <= 25)].sample(args.shoppers, random_state=0).index
tx_demo = tx[tx.customer_id.isin(shoppers)]
chosen = list(dict.fromkeys(tx_demo.article_id))
rest = articles[~articles.article_id.isin(chosen)]
# spread the rest over product type x colour, one item per cell first
rest = rest.sample(frac=1.0, random_state=0).drop_duplicates(["product_type_name", "colour_group_name"])
chosen += list(rest.article_id[: max(0, args.items - len(chosen))])
demo = articles[articles.article_id.isin(chosen)]

out.mkdir(parents=True, exist_ok=True)
demo.to_csv(out / "articles.csv", index=False, quoting=1)
tx_demo[tx_demo.article_id.isin(chosen)].to_csv(out / "transactions.csv", index=False)
for aid in demo.article_id:
    img = src / "images" / aid[:3] / f"{aid}.jpg"
    if img.exists():
        (out / "images" / aid[:3]).mkdir(parents=True, exist_ok=True)
        shutil.copy(img, out / "images" / aid[:3] / img.name)
print(f"{len(demo)} items, {len(tx_demo)} purchases by {len(shoppers)} shoppers -> {out}")
