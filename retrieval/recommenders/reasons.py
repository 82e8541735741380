"""Why a recommended item fits a shopper, from the shopper's own purchase history.

Each reason states only facts the records hold: which history item it points at, on which day it
was bought, and the type and colour the catalog gives both items. The sentence is split into
`claims`, each naming the item whose facts must back it, so a checker (synth_data.grounding) can
judge every claim the way it judges generated rationales; the day is checked against the
purchase records.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retrieval.catalog import Product
from retrieval.recommenders.data import History

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


@dataclass
class Claim:
    text: str
    item_id: str  # the item whose catalog facts must back the text


@dataclass
class Reason:
    kind: str  # bought_before | other_colour | like_purchase | popular | goes_with
    text: str
    item_id: str | None = None  # the history item it points at
    day: str | None = None  # ISO day of that purchase
    claims: list[Claim] = field(default_factory=list)


def kind_word(p: Product) -> str:
    t = p.attributes.get("product_type") or (p.category[-1] if p.category else "") or p.title
    return t.strip().lower()


def colour_word(p: Product) -> str:
    return (p.colour or p.attributes.get("colour", "")).strip().lower()


def day_text(day: float) -> tuple[str, str]:
    """(ISO day, "March 2020") of a float day since 1970."""
    d = np.datetime64("1970-01-01") + np.timedelta64(int(round(day)), "D")
    iso = str(d)
    return iso, f"{MONTHS[int(iso[5:7]) - 1]} {iso[:4]}"


def _described(p: Product) -> str:
    colour, kind = colour_word(p), kind_word(p)
    return f"{kind} in {colour}" if colour else kind


def _this(p: Product) -> str:
    """"this dress" / "these jeans"."""
    kind = kind_word(p)
    return "these" if kind.endswith("s") and not kind.endswith("ss") else "this"


def history_reason(item: int, products: list[Product], history: History, groups: np.ndarray | None,
                   vectors: np.ndarray | None, popular: bool = False) -> Reason:
    """The strongest history-based reason for recommending catalog row `item`."""
    p = products[item]
    if len(history):
        dated = len(history) - history.undated  # purchases first, then the request's own items

        def when(j: int) -> tuple[str | None, str | None]:
            return day_text(history.days[j]) if j < dated else (None, None)

        hit = np.flatnonzero(history.items == item)
        if len(hit):
            j = int(hit[-1])
            iso, month = when(j)
            text = f"You bought {_this(p)} {_described(p)} in {month}." if month else f"In your list: {_this(p)} {_described(p)}."
            return Reason("bought_before", text, p.id, iso, [Claim(text, p.id)])
        if groups is not None:
            same = np.flatnonzero(groups[history.items] == groups[item])
            if len(same):
                j = int(same[-1])
                h = products[int(history.items[j])]
                iso, month = when(j)
                first = f"You bought {_this(h)} {_described(h)} in {month}." if month else f"You chose {_this(h)} {_described(h)}."
                second = f"This one is {colour_word(p)}." if colour_word(p) else "This is another variant of it."
                return Reason("other_colour", f"{first} {second}", h.id, iso, [Claim(first, h.id), Claim(second, p.id)])
        uniq = np.unique(history.items)
        if vectors is not None:
            sims = vectors[uniq] @ vectors[item]
            j_item = int(uniq[int(np.argmax(sims))])
        else:
            same_kind = [int(i) for i in uniq if kind_word(products[int(i)]) == kind_word(p)]
            j_item = same_kind[-1] if same_kind else int(history.items[-1])
        j = int(np.flatnonzero(history.items == j_item)[-1])
        h = products[j_item]
        iso, month = when(j)
        first = f"Like the {_described(h)} you bought in {month}." if month else f"Like the {_described(h)} you chose."
        return Reason("like_purchase", first, h.id, iso, [Claim(first, h.id)])
    text = "Bought by many shoppers lately." if popular else "A popular choice."
    return Reason("popular", text)
