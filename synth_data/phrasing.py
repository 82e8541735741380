"""Words for facts: how a vocabulary value is said, and banks of interchangeable phrasings.

Every phrase that states a fact goes through `ItemView.say(kind, value)`, which picks a surface
form that the vocabulary reads back as the same value (checked once per form), so text built from
verified facts passes the grounding checker by construction. The banks give several wordings per
sentence so a model trained on template output does not learn one sentence.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from retrieval.catalog import Product
from retrieval.vocabulary import KINDS, SYNONYMS, extract_terms, item_values

PATTERN_WORDS = {"solid": "plain", "striped": "striped", "checked": "checked", "dotted": "dotted", "lace": "lace",
                 "printed": "printed", "denim": "denim", "melange": "melange", "embroidered": "embroidered",
                 "sparkly": "sparkly", "colour block": "colour-block", "jacquard": "jacquard", "mesh": "mesh"}
FIT_WORDS = {"slim": "slim fit", "regular": "regular fit", "loose": "loose fit", "high waist": "high waist"}
DEPARTMENT_WORDS = {"women": "women's", "men": "men's", "kids": "children's", "baby": "baby", "teen": "teen",
                    "sport": "sport"}
# product types said as a plural noun ("these trousers"), the rest take an article
PLURAL_TYPES = {"trousers", "jeans", "shorts", "leggings/tights", "socks", "boots", "sneakers", "sandals", "heels",
                "flat shoe", "gloves", "sunglasses", "shoes", "earring", "underwear bottom", "swimwear bottom"}
TYPE_WORDS = {"flat shoe": "flat shoes", "earring": "earrings", "leggings/tights": "leggings", "underwear bottom": "briefs",
              "swimwear bottom": "bikini bottoms", "jumpsuit/playsuit": "jumpsuit", "pyjama set": "pyjama set",
              "hair accessory": "hair accessory"}


@lru_cache(maxsize=None)
def reads_as(phrase: str, kind: str, value: str) -> bool:
    """Whether the vocabulary reads `phrase` as exactly this one value of this kind."""
    terms = [t for t in extract_terms(phrase) if not t.negated]
    same = [t for t in terms if t.kind == kind]
    return bool(same) and all(t.value == value for t in same) and all(t.kind == kind or t.start == same[0].start for t in terms)


def surface(kind: str, value: str, raw: str = "") -> str:
    """A phrase for a value that reads back as that value (the catalog's own word when it does)."""
    table = {"pattern": PATTERN_WORDS, "fit": FIT_WORDS, "department": DEPARTMENT_WORDS, "product_type": TYPE_WORDS}
    for cand in (table.get(kind, {}).get(value, ""), raw.strip().lower(), value, *SYNONYMS.get(kind, {}).get(value, [])):
        if cand and reads_as(cand, kind, value):
            return cand
    return value


def article(noun_phrase: str) -> str:
    return ("an " if noun_phrase[:1].lower() in "aeiou" else "a ") + noun_phrase


def join(items: list[str], conj: str = "and") -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {conj} " + items[-1]


@dataclass
class ItemView:
    """An item's verified facts, ready to be said: values per kind and a phrase for each (the
    phrases asked for on every sentence are worked out once per view)."""

    product: Product
    values: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self):
        if not self.values:
            self.values = item_values(self.product)

    @cached_property
    def facts(self) -> dict[str, str]:
        return self.product.facts()

    def has(self, kind: str) -> bool:
        return bool(self.values.get(kind))

    def first(self, kind: str) -> str | None:
        vals = sorted(self.values.get(kind) or ())
        if kind == "department" and len(vals) > 1:
            vals = [v for v in vals if v != "sport"] + ["sport"]
        return vals[0] if vals else None

    def say(self, kind: str, value: str | None = None) -> str:
        value = value or self.first(kind) or ""
        raw = self.facts.get(kind, "") if kind in ("colour", "product_type") else ""
        return surface(kind, value, raw)

    @cached_property
    def plural(self) -> bool:
        return (self.first("product_type") or "") in PLURAL_TYPES or self.type_word.endswith(("trousers", "jeans", "leggings", "shorts"))

    @cached_property
    def type_word(self) -> str:
        return self.say("product_type") if self.has("product_type") else "item"

    def noun(self, kinds: tuple[str, ...] = ("colour", "pattern", "product_type"), with_article: bool = True) -> str:
        """'a black striped t-shirt' / 'dark blue jeans' from the kinds the item states."""
        words = []
        for kind in kinds:
            if kind == "product_type" or not self.has(kind):
                continue
            if kind == "pattern" and self.first("pattern") == "solid":
                continue
            if kind == "pattern" and self.first("pattern") == "denim" and self.first("product_type") == "jeans":
                continue
            words.append(self.say(kind))
        words.append(self.type_word)
        phrase = " ".join(words)
        return article(phrase) if with_article and not self.plural else phrase

    @property
    def it(self) -> str:
        return "they" if self.plural else "it"

    @property
    def this(self) -> str:
        """'this dress' / 'these trousers' / 'this item'."""
        return f"{'these' if self.plural else 'this'} {self.type_word}"

    @property
    def is_(self) -> str:
        return "are" if self.plural else "is"

    def subject(self) -> str:
        """'It is' / 'They are' with a capital."""
        return f"{self.it.capitalize()} {self.is_}"

    def known_kinds(self) -> list[str]:
        return [k for k in KINDS if self.has(k)]


class Bank:
    """Interchangeable phrasings; `pick` is deterministic for a given random generator."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def pick(self, options: list[str], **slots: str) -> str:
        return self.rng.choice(options).format(**slots)

    def item(self, view: "ItemView", options: list[str], **slots: str) -> str:
        """`pick` with the item's pronoun and verb forms as slots: {it} {It} {is} {has} {fits} {them}."""
        forms = {"it": view.it, "It": view.it.capitalize(), "is": view.is_, "has": "have" if view.plural else "has",
                 "fits": "fit" if view.plural else "fits", "suits": "suit" if view.plural else "suits", "them": "them" if view.plural else "it",
                 "matches": "match" if view.plural else "matches", "this": view.this, "type": view.type_word, "This": cap(view.this)}
        return self.rng.choice(options).format_map({**forms, **slots})


def cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s
