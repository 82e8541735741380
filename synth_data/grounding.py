"""The grounding checker: which attribute values a text states, and whether the item's facts back them.

It reads text and items through `retrieval.vocabulary` (`extract_terms`, `item_values`, `matches`),
so "navy" is the same dark blue here as in a shopper's query. The same `check` filters generated
training data, guards served explanations and scores explanations in evaluation.

Policy on top of the vocabulary, kept here because it is about judging claims, not reading words:
- Text is read clause by clause (sentences, `;`, `:` and a comma before a new clause), so the
  vocabulary's "not" does not run over into the next clause ("No, it is dark blue").
- A value more specific than the catalog's ("navy" for an item the catalog calls "blue", "t-shirt"
  for a "top") is *not stated*, not contradicted.
- Some kinds hold independent groups of values: a fibre ("cotton") is not contradicted by a fabric
  construction ("jersey"), a rise ("high waist") not by a cut ("slim"), an audience ("women") not by
  "sport". A claim in a group the item says nothing about is not stated.
- A span in double quotes that repeats the shopper's request or the item's own catalog text
  verbatim is a quotation, not a claim ('you asked for "black"'); it is reported in `quoted`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from retrieval.catalog import Product
from retrieval.vocabulary import Term, accepts, extract_terms, item_values, matches

# Value groups that do not exclude one another; absence of the whole group means "not stated".
FIBRES = frozenset({"cotton", "wool", "linen", "silk", "viscose", "polyester", "leather", "faux leather", "suede"})
OPEN_GROUPS: dict[str, list[frozenset[str]]] = {
    "material": [FIBRES],  # everything else (jersey, knit, denim, satin, ...) is a construction
    "fit": [frozenset({"slim", "regular", "loose"}), frozenset({"high waist"})],
    "department": [frozenset({"women", "men", "kids", "baby", "teen"})],
}

_QUOTE_RE = re.compile(r'"([^"\n]{1,200})"|“([^”\n]{1,200})”|«([^»\n]{1,200})»')
# clause boundaries: sentence ends, ; and :, and a comma or dash that opens a new clause
_CLAUSE_OPENERS = r"(?:it|its|it's|this|that|these|those|they|which|but|the|you|your|i|yes|so|though|while|whereas|and it|both|item|option|neither|either)"
_CLAUSE_RE = re.compile(
    r"(?<!\d)[.!?;:](?!\d)|\s[-–—]\s|,(?=\s*" + _CLAUSE_OPENERS + r"\b)|\n",
    re.IGNORECASE,
)
_PLACEHOLDER = " quotation "


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w'\-/ ]+", " ", text.lower()).split())


def _catalog_text(p: Product) -> str:
    facts = p.facts()
    return " | ".join([p.title, p.description, *facts.values(), *p.category])


@dataclass
class GroundingResult:
    """The attribute claims of a text, sorted by what the item's facts say about them."""

    supported: list[Term] = field(default_factory=list)
    contradicted: list[Term] = field(default_factory=list)
    not_stated: list[Term] = field(default_factory=list)
    quoted: list[Term] = field(default_factory=list)  # inside a verbatim quotation: not a claim
    item_values: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.contradicted

    @property
    def precision(self) -> float:
        n = len(self.supported) + len(self.contradicted)
        return 1.0 if n == 0 else len(self.supported) / n

    def reasons(self) -> list[str]:
        """One line per contradiction, for reject reports: 'colour: says black, item is dark blue'."""
        out = []
        for t in self.contradicted:
            have = ", ".join(self.item_values.get(t.kind, [])) or "?"
            says = f"not {t.value}" if t.negated else t.value
            out.append(f"{t.kind}: says {says!r} ({t.phrase!r}), item is {have}")
        return out

    def to_dict(self) -> dict:
        def terms(ts: list[Term]) -> list[dict]:
            return [{"kind": t.kind, "value": t.value, "phrase": t.phrase, "negated": t.negated} for t in ts]

        return {"ok": self.ok, "precision": self.precision, "supported": terms(self.supported),
                "contradicted": terms(self.contradicted), "not_stated": terms(self.not_stated),
                "quoted": terms(self.quoted), "reasons": self.reasons()}


def clauses(text: str) -> list[str]:
    """Split a text into clauses so that negation stays inside its own clause."""
    return [c for c in (s.strip() for s in _CLAUSE_RE.split(text)) if c]


def strip_quotations(text: str, sources: Iterable[str]) -> tuple[str, list[str]]:
    """Replace double-quoted spans that repeat one of `sources` verbatim by a neutral word.
    Returns the text to judge and the quoted spans taken out."""
    pool = [_norm(s) for s in sources if s]
    taken: list[str] = []

    def repl(m: re.Match) -> str:
        inner = next(g for g in m.groups() if g is not None)
        key = _norm(inner)
        if key and any(key in s for s in pool):
            taken.append(inner)
            return _PLACEHOLDER
        return " " + inner + " "  # an unverifiable quotation is judged like any other text

    return _QUOTE_RE.sub(repl, text), taken


def primary(terms: list[Term]) -> list[Term]:
    """Drop the pattern/material a product-type word implies ("jeans" -> denim): the product type
    is the claim; black jeans the catalog files as solid are not a false "denim" claim."""
    typed = {t.start for t in terms if t.kind == "product_type"}
    return [t for t in terms if t.kind == "product_type" or t.start not in typed]


def claims(text: str) -> list[list[Term]]:
    """The attribute claims a text makes, clause by clause. A claim is a list of readings: one word
    can name two kinds ("lace" is a pattern and a material) and is true if either reading is."""
    out: list[list[Term]] = []
    seen: set[tuple] = set()
    for clause in clauses(text):
        by_word: dict[tuple[int, str, bool], list[Term]] = {}
        for t in primary(extract_terms(clause)):
            by_word.setdefault((t.start, t.phrase, t.negated), []).append(t)
        for readings in by_word.values():
            key = tuple(sorted((t.kind, t.value, t.negated) for t in readings))
            if key not in seen:
                seen.add(key)
                out.append(readings)
    return out


def judge(readings: list[Term], values: Mapping[str, set[str]]) -> tuple[Term, bool | None]:
    """The best reading of one claim and its verdict (supported over not stated over contradicted)."""
    rank = {True: 2, None: 1, False: 0}
    best = max(((t, verdict(t, values)) for t in readings), key=lambda tv: rank[tv[1]])
    return best


def verdict(term: Term, values: Mapping[str, set[str]]) -> bool | None:
    """True (supported), False (contradicted) or None (the item's facts do not say)."""
    have = values.get(term.kind) or set()
    if not have:
        return None
    for group in OPEN_GROUPS.get(term.kind, []):
        if term.value in group:
            closure = set().union(*(accepts(term.kind, v) for v in group))
            if not have & closure:
                return None
    stated = accepts(term.kind, term.value)
    if not have & stated and any(term.value in accepts(term.kind, h) for h in have):
        return None  # more specific than the catalog ("navy" for a "blue" item)
    if term.kind == "material" and term.value not in FIBRES and not have & stated:
        # a construction ("jersey") is contradicted only by another construction the item states
        if not have - FIBRES:
            return None
    return matches(term, values)


def check(text: str, product: Product, request: str | None = None, sources: Iterable[str] = (),
          values: Mapping[str, set[str]] | None = None) -> GroundingResult:
    """Sort every attribute claim in `text` into supported / contradicted / not stated for `product`.

    `request` (the shopper's words) and `sources` (other catalog text, e.g. a purchased item's
    title) may be quoted verbatim without that counting as a claim. `values` skips re-reading the
    item when the caller already has `item_values(product)`."""
    values = item_values(product) if values is None else values
    judged, quoted_spans = strip_quotations(text, [request or "", _catalog_text(product), *sources])
    result = GroundingResult(item_values={k: sorted(v) for k, v in values.items() if v})
    result.quoted = [t for span in quoted_spans for t in extract_terms(span)]
    for readings in claims(judged):
        t, v = judge(readings, values)
        (result.not_stated if v is None else result.supported if v else result.contradicted).append(t)
    return result


# ----- texts about several items (comparisons) -----
DEFAULT_ALIASES = {
    "A": [r"item a\b", r"option a\b", r"the first\b", r"the left\b", r"on the left\b"],
    "B": [r"item b\b", r"option b\b", r"the second\b", r"the right\b", r"on the right\b"],
}
_BOTH_RE = re.compile(r"\b(both|neither|either|each)\b", re.IGNORECASE)


def check_multi(text: str, products: Mapping[str, Product], request: str | None = None,
                aliases: Mapping[str, list[str]] | None = None) -> dict[str, GroundingResult]:
    """Check a text about several labelled items ("Item A ...; Item B ...") clause by clause.

    A clause is checked against the items it names; a clause that names none continues the
    previous clause's item; "both"/"neither" and clauses before any item is named are checked
    against every item, so nothing unattributed escapes the check."""
    aliases = aliases or DEFAULT_ALIASES
    patterns = {label: re.compile(r"\b(?:" + "|".join(aliases.get(label, [re.escape(label)])) + ")", re.IGNORECASE)
                for label in products}
    values = {label: item_values(p) for label, p in products.items()}
    sources = [_catalog_text(p) for p in products.values()]
    judged, quoted_spans = strip_quotations(text, [request or "", *sources])
    results = {label: GroundingResult(item_values={k: sorted(v) for k, v in values[label].items() if v})
               for label in products}
    quoted = [t for span in quoted_spans for t in extract_terms(span)]
    for r in results.values():
        r.quoted = list(quoted)
    current = list(products)
    seen: dict[str, set] = {label: set() for label in products}
    for clause in clauses(judged):
        named = [label for label, pat in patterns.items() if pat.search(clause)]
        if _BOTH_RE.search(clause):
            current = list(products)
        elif named:
            current = named
        for readings in claims(clause):
            for label in current:
                key = tuple(sorted((t.kind, t.value, t.negated) for t in readings))
                if key in seen[label]:
                    continue
                seen[label].add(key)
                t, v = judge(readings, values[label])
                r = results[label]
                (r.not_stated if v is None else r.supported if v else r.contradicted).append(t)
    return results
