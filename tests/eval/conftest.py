"""A small synthetic catalog with the structure of fashion purchases: tastes, re-buys, other colours."""
import numpy as np
import pandas as pd
import pytest
import torch

from retrieval.catalog import Catalog, Product

torch.set_num_threads(1)

TYPES = ["dress", "jeans", "sweater", "shirt", "skirt", "socks"]
WORDS = {
    "dress": "flowing dress in soft viscose with a flared skirt",
    "jeans": "five pocket jeans in washed denim with a zip fly",
    "sweater": "sweater in a soft rib knit with dropped shoulders",
    "shirt": "shirt in woven cotton poplin with a collar and buttons",
    "skirt": "short skirt in stretch twill with a concealed zip",
    "socks": "ankle socks in a cotton blend with ribbed cuffs",
}
COLOURS = ["black", "white", "red"]


def make_catalog(n_groups: int = 30, n_users: int = 80, seed: int = 0, root=".") -> Catalog:
    rng = np.random.default_rng(seed)
    products = []
    for g in range(n_groups):
        t = TYPES[g % len(TYPES)]
        for c in COLOURS:
            desc = "" if (g == 5 and c == "red") else f"{WORDS[t]} model {g}"
            products.append(Product(id=f"{g:03d}{c[0]}", title=f"{t} {g} {c}", description=desc,
                                    attributes={"product_type": t, "colour": c}, category=["women", t], colour=c,
                                    group_id=f"g{g}"))
    by_type = {t: [p.id for p in products if p.attributes["product_type"] == t] for t in TYPES}
    inter = []
    t0 = pd.Timestamp("2020-01-01")
    for u in range(n_users):
        taste = TYPES[u % len(TYPES)]
        n = int(rng.integers(1, 14))
        day = 0
        bought = []
        for _ in range(n):
            day += int(rng.integers(0, 6))
            r = rng.random()
            if bought and r < 0.25:
                item = bought[int(rng.integers(len(bought)))]  # re-buy
            elif bought and r < 0.4:
                g = bought[-1][:3]
                item = g + COLOURS[int(rng.integers(3))][0]  # another colour
            elif r < 0.85:
                item = by_type[taste][int(rng.integers(len(by_type[taste])))]
            else:
                item = products[int(rng.integers(len(products)))].id
            bought.append(item)
            inter.append((f"u{u:03d}", item, t0 + pd.Timedelta(days=day), 1.0))
    return Catalog(products, inter, root=root)


@pytest.fixture(scope="session")
def synth_catalog():
    return make_catalog()
