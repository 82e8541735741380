"""Throughput of the frozen towers on this CPU (no cache): images/s (with JPEG decoding) and texts/s.

    python bench/tower_throughput.py --catalog var/hm/catalog --images 256 --texts 1024 --threads 1

Prints JSON. Set --threads to what the machine has free: oversubscribed threads are much slower.
"""
import argparse
import json
import time

import torch

from retrieval.catalog import Catalog, product_text
from retrieval.encoders.towers import ImageTower, TextTower, open_image

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--catalog", default="var/hm/catalog")
ap.add_argument("--images", type=int, default=256)
ap.add_argument("--texts", type=int, default=1024)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--batch", type=int, default=32)
args = ap.parse_args()
torch.set_num_threads(args.threads)
catalog = Catalog.load(args.catalog)
items = [p for p in catalog.products if p.image_paths]
image_tower, text_tower = ImageTower(), TextTower()
image_tower.features([open_image(items[0].image_paths[0])])  # warm-up
t = time.perf_counter()
for i in range(0, args.images, args.batch):
    image_tower.features([open_image(p.image_paths[0]) for p in items[i : i + args.batch]])
img_s = args.images / (time.perf_counter() - t)
texts = [product_text(p) for p in catalog.products[: args.texts]]
text_tower.features(texts[:8])
t = time.perf_counter()
text_tower.features(texts)
txt_s = args.texts / (time.perf_counter() - t)
t = time.perf_counter()
for q in ["black strap top", "navy blazer for the office", "white trainers"] * 10:
    text_tower.features([q])
query_ms = 1000 * (time.perf_counter() - t) / 30
with open("/proc/loadavg") as fh:
    load = fh.read().split()[0]
print(json.dumps({"threads": args.threads, "images_per_s": round(img_s, 1), "item_texts_per_s": round(txt_s, 1),
                  "single_query_text_ms": round(query_ms, 1), "load_average_1min": float(load)}))
