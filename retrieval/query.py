"""The one query reader: shopper text -> a `Query`.

Search, the grounding checker, explainers and chat all take a `Query` (or read text through
`read_query`), so a phrase means the same thing everywhere and nothing re-parses the text.

A `Query` holds the attribute values the text names (wanted and negated, as vocabulary `Term`s),
price bounds ("under 20", "between 10 and 30"), and the free words no term consumed (what BM25
and the dense encoder still need). Its `text` is what the encoders embed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from retrieval.vocabulary import KINDS, NEGATIONS, Term, extract_terms, tokens

# price phrases: "under 20", "below $30", "less than 20", "over 50", "more than 10", "between 10 and 20", "10-20 euros"
_NUM = r"[$€£]?\s*(\d+(?:[.,]\d+)?)\s*(?:[$€£]|euros?\b|eur\b|usd\b|dollars?\b|pounds?\b|gbp\b|sek\b|kr\b)?"
PRICE_PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\bbetween\s+" + _NUM + r"\s+(?:and|-|to)\s+" + _NUM, re.I), "range"),
    (re.compile(r"\b(?:under|below|less than|cheaper than|max(?:imum)?|at most|up to|no more than|<=?)\s*" + _NUM, re.I), "max"),
    (re.compile(r"\b(?:over|above|more than|at least|min(?:imum)?|>=?)\s*" + _NUM, re.I), "min"),
]
STOPWORDS = frozenset("""a an the and or of for to in on with me my i im i'm you your some any something anything looking
look need want wanted would like please show find get give have has is are be it its this that these those one ones
which what who how do does can could should will just also very really more most than them they there here
""".split())


def _num(s: str) -> float:
    return float(s.replace(",", "."))


@dataclass(frozen=True)
class Query:
    """What a shopper's text asks for. Build it with `read_query`; refine it with `dataclasses.replace`."""

    text: str
    terms: tuple[Term, ...] = ()  # every attribute value named, in text order; `negated` marks exclusions
    price_min: float | None = None
    price_max: float | None = None
    words: tuple[str, ...] = field(default=())  # free words: tokens no term or price phrase consumed, stop words dropped

    @property
    def wanted(self) -> list[Term]:
        return [t for t in self.terms if not t.negated]

    @property
    def excluded(self) -> list[Term]:
        return [t for t in self.terms if t.negated]

    def values(self, kind: str, negated: bool = False) -> list[str]:
        """The canonical values of one kind the query wants (or, with `negated`, excludes)."""
        return [t.value for t in self.terms if t.kind == kind and t.negated == negated]

    def with_text(self, text: str) -> "Query":
        return replace(self, text=text)


def read_price(text: str) -> tuple[float | None, float | None, list[tuple[int, int]]]:
    """Price bounds named in `text`, and the character spans that named them."""
    lo = hi = None
    spans: list[tuple[int, int]] = []
    for pattern, kind in PRICE_PATTERNS:
        for m in pattern.finditer(text):
            if any(s <= m.start() < e for s, e in spans):
                continue
            if kind == "range":
                a, b = sorted((_num(m.group(1)), _num(m.group(2))))
                lo, hi = a, b
            elif kind == "max":
                hi = _num(m.group(1))
            else:
                lo = _num(m.group(1))
            spans.append(m.span())
    return lo, hi, spans


def read_query(text: str, kinds: tuple[str, ...] = KINDS) -> Query:
    """Read shopper text into a `Query`."""
    text = text or ""
    lo, hi, spans = read_price(text)
    rest = text
    for s, e in sorted(spans, reverse=True):
        rest = rest[:s] + " " + rest[e:]
    terms = tuple(extract_terms(rest, kinds))
    used = {i for t in terms for i in range(t.start, t.start + len(tokens(t.phrase)))}
    words = tuple(w for i, w in enumerate(tokens(rest)) if i not in used and w not in STOPWORDS and w not in NEGATIONS and not w.isdigit())
    return Query(text=text, terms=terms, price_min=lo, price_max=hi, words=words)
