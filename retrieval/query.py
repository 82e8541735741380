"""The one query reader: shopper text -> a `Query`.

Search, the grounding checker, explainers and chat all take a `Query` (or read text through
`read_query` / `read_terms`), so a phrase means the same thing everywhere and nothing re-parses
the text. Pass the catalog's vocabulary (`Searcher.vocab`, or `searcher.read(text)`) to read with
the catalog's own values; without one the default vocabulary (the language pack alone) is used.

A `Query` holds the attribute values the text names (wanted and negated, as vocabulary `Term`s),
price bounds ("under 20", "between 10 and 30"), the free words no term consumed, and the free
words a negation covers ("without sleeves"). Its `text` is what the encoders embed; `lexical_words`
is what BM25 matches (every wanted word, none of the negated ones).
"""
from __future__ import annotations

import re
from functools import lru_cache
from dataclasses import dataclass, field, replace

from retrieval.vocabulary import DEFAULT, Term, Vocabulary, tokens

# price phrases: "under 20", "below $30", "less than 20", "over 50", "more than 10", "between 10 and 20", "10-20 euros"
_NUM = r"[$€£]?\s*(\d+(?:[.,]\d+)?)\s*(?:[$€£]|euros?\b|eur\b|usd\b|dollars?\b|pounds?\b|gbp\b|sek\b|kr\b)?"
PRICE_PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\bbetween\s+" + _NUM + r"\s+(?:and|-|to)\s+" + _NUM, re.I), "range"),
    (re.compile(r"\b(?:under|below|less than|cheaper than|max(?:imum)?|at most|up to|no more than|<=?)\s*" + _NUM, re.I), "max"),
    (re.compile(r"\b(?:over|above|more than|at least|min(?:imum)?|>=?)\s*" + _NUM, re.I), "min"),
]
STOPWORDS = DEFAULT.stopwords


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
    excluded_words: tuple[str, ...] = field(default=())  # free words a negation covers ("without sleeves")

    @property
    def wanted(self) -> list[Term]:
        return [t for t in self.terms if not t.negated]

    @property
    def excluded(self) -> list[Term]:
        return [t for t in self.terms if t.negated]

    def values(self, kind: str, negated: bool = False) -> list[str]:
        """The values of one kind the query wants (or, with `negated`, excludes)."""
        return [t.value for t in self.terms if t.kind == kind and t.negated == negated]

    def with_text(self, text: str) -> "Query":
        return replace(self, text=text)

    @property
    def lexical_words(self) -> list[str]:
        """The words a lexical retriever should match: wanted phrases and free words, in text order."""
        out: list[tuple[int, str]] = [(t.start, t.phrase) for t in self.wanted]
        seen = {w for _, p in out for w in p.split()}
        out += [(10**6, w) for w in self.words if w not in seen]
        return [w for _, p in sorted(out, key=lambda x: x[0]) for w in p.split()]


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


def read_terms(text: str, vocab: Vocabulary | None = None, kinds: tuple[str, ...] | None = None) -> list[Term]:
    """The attribute terms of `text` (no price reading; token positions as `tokens(text)`): what the
    grounding checker judges, read the same way a shopper's query is. Memoised for the shared
    vocabulary: every served rationale is checked, and its sentences repeat."""
    if vocab is None or vocab is DEFAULT:
        return list(_default_terms(text, None if kinds is None else tuple(kinds)))
    return vocab.extract_terms(text, kinds)


@lru_cache(maxsize=65536)
def _default_terms(text: str, kinds: tuple[str, ...] | None) -> tuple[Term, ...]:
    return tuple(DEFAULT.extract_terms(text, kinds))


def read_query(text: str, kinds: tuple[str, ...] | None = None, vocab: Vocabulary | None = None, similar: bool = True) -> Query:
    """Read shopper text into a `Query`. With a catalog `vocab` that has the text tower attached,
    words the catalog does not use are matched to its values by similarity (`similar`)."""
    text = text or ""
    vocab = vocab or DEFAULT
    lo, hi, spans = read_price(text)
    rest = text
    for s, e in sorted(spans, reverse=True):
        rest = rest[:s] + " " + rest[e:]
    terms, free, negated_words = vocab.read(rest, kinds, similar=similar)
    words = tuple(w for w in free if w not in vocab.stopwords and w not in vocab.negations and not w.isdigit())
    return Query(text=text, terms=tuple(terms), price_min=lo, price_max=hi, words=words, excluded_words=tuple(negated_words))


__all__ = ["Query", "read_query", "read_terms", "read_price", "tokens", "STOPWORDS", "PRICE_PATTERNS"]
