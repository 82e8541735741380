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
  verbatim, on word boundaries, is a quotation, not a claim ('you asked for "black"'); it is
  reported in `quoted`. The sentence around it is still judged: a quote stated of the item
  ('it is "red"', 'comes in "red"', 'a "red" dress') is a claim like any other words.
"""
from __future__ import annotations

import re
from functools import lru_cache
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from retrieval.catalog import Product
from retrieval.query import read_terms as extract_terms  # the one reader, shared with search
from retrieval.vocabulary import FIT_PART_NOUNS, Term, accepts, item_values, matches, tokens

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
# words before a quote that make it a statement about the item, not a quotation of someone's words
_CLAIM_BEFORE = re.compile(
    r"(?:\b(?:is|are|was|were|be|being|looks?|seems?|comes?\s+in|made\s+(?:of|from)|in)|'s|'re|’s|’re)\s*$", re.IGNORECASE)
_DETERMINER_BEFORE = re.compile(r"\b(?:a|an|the|this|that|these|those|its|their)\s*$", re.IGNORECASE)


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
    paired: list[Term] = field(default_factory=list)  # another garment or a part ("with jeans", "wide sleeves"): not a claim
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
                "quoted": terms(self.quoted), "paired": terms(self.paired), "reasons": self.reasons()}


def clauses(text: str) -> list[str]:
    """Split a text into clauses so that negation stays inside its own clause."""
    return [c for c in (s.strip() for s in _CLAUSE_RE.split(text)) if c]


def strip_quotations(text: str, sources: Iterable[str]) -> tuple[str, list[str]]:
    """Replace double-quoted spans that repeat one of `sources` verbatim (whole words) by a
    neutral word, unless the sentence states the quote of the item (see `_stated_of_item`).
    Returns the text to judge and the quoted spans taken out."""
    pool = [_norm(s) for s in sources if s]
    taken: list[str] = []

    def repl(m: re.Match) -> str:
        inner = next(g for g in m.groups() if g is not None)
        key = _norm(inner)
        if key and not _stated_of_item(m) and any(_has_words(s, key) for s in pool):
            taken.append(inner)
            return _PLACEHOLDER
        return " " + inner + " "  # an unverifiable or asserted quotation is judged like any other text

    return _QUOTE_RE.sub(repl, text), taken


def _has_words(haystack: str, words: str) -> bool:
    """`words` occurs in `haystack` as whole words ("red" is not in "tailored")."""
    return re.search(r"(?<![\w'\-/])" + re.escape(words) + r"(?![\w'\-/])", haystack) is not None


def _stated_of_item(m: re.Match) -> bool:
    """The quote is what the item is said to be: after a copula ('it is "red"', 'comes in "red"')
    or inside a noun phrase ('a "red" dress')."""
    before = _CLAUSE_RE.split(m.string[: m.start()])[-1]
    if _CLAIM_BEFORE.search(before):
        return True
    return bool(_DETERMINER_BEFORE.search(before)) and re.match(r"\s*\w", m.string[m.end():]) is not None


def primary(terms: list[Term]) -> list[Term]:
    """Drop the pattern/material a product-type word implies ("jeans" -> denim): the product type
    is the claim; black jeans the catalog files as solid are not a false "denim" claim."""
    typed = {t.start for t in terms if t.kind == "product_type"}
    return [t for t in terms if t.kind == "product_type" or t.start not in typed]


# words before a garment that make it another garment, not the item: "pair it with black jeans"
PAIRING = {"with", "under", "over", "into", "beneath", "underneath", "alongside"}
_DETERMINERS = {"a", "an", "the", "some", "your", "my", "its", "their", "any", "matching", "simple", "classic", "favourite"}
_LIST_WORDS = {"or", "nor", "a", "an", "the", "any"}
_PLACE_PREPOSITIONS = {"at", "to", "from", "on", "near", "towards", "around", "round", "across", "over", "along"}
_PART_NOUNS = {"fabric", "material", "sleeves", "sleeve", "waist", "collar", "neckline", "strap", "straps", "pocket",
               "pockets", "hem", "sole", "lining", "cups", "weave", "style", "shape", "look", "section", "panel", "panels"}
_STOP = {"is", "are", "it", "this", "they", "be", "and", "but", "or", "not", "no"}


def _after_preposition(toks: list[str], i: int) -> bool:
    j = i - 1
    if j >= 0 and toks[j] == "the":
        j -= 1
    return j >= 0 and toks[j] in _PLACE_PREPOSITIONS


def _span(t: Term) -> range:
    return range(t.start, t.start + len(t.phrase.split()))


def _noun_phrase(t: Term, terms: list[Term], toks: list[str]) -> tuple[list[Term], int]:
    """The modifier terms directly before a product type ('black' in 'a black dress') and the index
    of the first token before the noun phrase (-1 at the start of the clause)."""
    by_end = {max(_span(o)): o for o in terms if o is not t and o.kind != "product_type"}
    mods: list[Term] = []
    j = t.start - 1
    while j >= 0:
        if j in by_end:
            mods.append(by_end[j])
            j = by_end[j].start - 1
        elif toks[j] in _DETERMINERS:
            j -= 1
        else:
            break
    return mods, j


@lru_cache(maxsize=65536)
def read_clause(clause: str) -> tuple[tuple[str, ...], tuple[Term, ...], tuple[Term, ...]]:
    """One clause read through the vocabulary (memoised: served texts repeat their clauses, and
    reading one is most of a check), with the grammar the vocabulary leaves out:
    - "not only white" is not a negation;
    - a negated noun phrase with modifiers negates the modifiers, not the noun ("not a plain
      dress" is still a dress), a bare noun stays negated ("not a jacket");
    - "isn't a cardigan or a hoodie": the negation runs over an or-list;
    - a garment after "with", "under", "into", ... ("pair it with black jeans") or "top" in "on
      top" is another item, not a claim about this one; a fit word before a part noun ("wide
      sleeves") is the part's shape (as in `item_values`).
    Returns the tokens, the terms that are claims, and the terms set aside as other garments."""
    clause = re.sub(r"\bnot only\b", "only", clause, flags=re.IGNORECASE)
    toks = tokens(clause)
    terms = sorted(primary(extract_terms(clause)), key=lambda t: t.start)
    paired: set[int] = set()
    starts = {t.start: k for k, t in enumerate(terms) if t.kind == "product_type"}
    for i, t in enumerate(terms):
        if t.kind == "fit" and (max(_span(t)) + 1 < len(toks)) and toks[max(_span(t)) + 1] in FIT_PART_NOUNS:
            paired.add(i)  # "wide sleeves": a part's shape, read the same way item_values reads the catalog
            continue
        if t.kind != "product_type":
            continue
        end = max(_span(t)) + 1
        if end in starts or toks[end: end + 1] and toks[end] in _PART_NOUNS:
            paired.add(i)  # a noun used as a modifier: "T-shirt bra", "sweatshirt fabric", "cap sleeves"
            continue
        if t.phrase == "body" and t.start > 0 and toks[t.start - 1] in {"the", "your", "her", "his"}:
            paired.add(i)  # the wearer's body, not a bodysuit
            continue
        if t.value == "top" and (_after_preposition(toks, t.start) or toks[end: end + 1] == ["of"]):
            paired.add(i)  # a place, not a garment: "a trim at the top", "the top of the hood"
            continue
        mods, j = _noun_phrase(t, terms, toks)
        k, unknown = j, 0
        while k >= 0 and toks[k] not in PAIRING and toks[k] not in _STOP and unknown + (toks[k] not in _DETERMINERS) <= 1:
            unknown += toks[k] not in _DETERMINERS
            k -= 1  # one unknown word may sit between: "with a tie belt", "use with a suspender belt"
        if k >= 0 and toks[k] in PAIRING:
            j = k
        if j >= 0 and (toks[j] in PAIRING or toks[max(0, j - 2): j + 1] == ["on", "top", "of"]):
            paired.add(i)
            paired.update(k for k, o in enumerate(terms) if o in mods)
        elif t.negated and any(m.negated for m in mods):
            terms[i] = replace(t, negated=False)
    types = [i for i, t in enumerate(terms) if t.kind == "product_type"]
    for a, b in zip(types, types[1:]):  # "with jeans or a skirt": the list goes on being other garments
        mods, j = _noun_phrase(terms[b], terms, toks)
        gap = toks[max(_span(terms[a])) + 1: j + 1]
        if a in paired and gap and set(gap) <= _LIST_WORDS | {"and"} and set(gap) & {"or", "nor", "and"}:
            paired.add(b)
            paired.update(k for k, o in enumerate(terms) if o in mods)
    for i in range(1, len(terms)):
        prev, cur = terms[i - 1], terms[i]
        gap = toks[max(_span(prev)) + 1: cur.start]
        if prev.negated and not cur.negated and gap and set(gap) <= _LIST_WORDS and set(gap) & {"or", "nor"}:
            terms[i] = replace(cur, negated=True)
    return (tuple(toks), tuple(t for i, t in enumerate(terms) if i not in paired),
            tuple(t for i, t in enumerate(terms) if i in paired))


def by_word(terms: list[Term]) -> list[list[Term]]:
    groups: dict[tuple[int, str, bool], list[Term]] = {}
    for t in terms:
        groups.setdefault((t.start, t.phrase, t.negated), []).append(t)
    return list(groups.values())


def claims(text: str, set_aside: list[Term] | None = None) -> list[list[Term]]:
    """The attribute claims a text makes, clause by clause. A claim is a list of readings: one word
    can name two kinds ("lace" is a pattern and a material) and is true if either reading is.
    Terms about other garments are appended to `set_aside` when given."""
    out: list[list[Term]] = []
    seen: set[tuple] = set()
    for clause in clauses(text):
        _, terms, paired = read_clause(clause)
        if set_aside is not None:
            set_aside.extend(paired)
        for readings in by_word(terms):
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
    judged, quoted_spans = text, []
    if _QUOTE_RE.search(text):  # most texts quote nothing: skip normalising every source
        judged, quoted_spans = strip_quotations(text, [request or "", _catalog_text(product), *sources])
    result = GroundingResult(item_values={k: sorted(v) for k, v in values.items() if v})
    result.quoted = [t for span in quoted_spans for t in extract_terms(span)]
    for readings in claims(judged, result.paired):
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
        aside: list[Term] = []
        for readings in claims(clause, aside):
            for label in current:
                key = tuple(sorted((t.kind, t.value, t.negated) for t in readings))
                if key in seen[label]:
                    continue
                seen[label].add(key)
                t, v = judge(readings, values[label])
                r = results[label]
                (r.not_stated if v is None else r.supported if v else r.contradicted).append(t)
        for label in current:
            results[label].paired.extend(aside)
    return results


# ----- what a text about one item may not say (constrained decoding, served-text promise) -----
CONSTRAINED_KINDS = ("colour", "product_type", "pattern", "material")


def forbidden_phrases(values: Mapping[str, set[str]], request: str | None = None, sources: Iterable[str] = (),
                      unverified: bool = True) -> list[str]:
    """The vocabulary phrases a text about an item with these `values` may not use, because the
    checker would judge them contradicted (or, with `unverified`, not backed by the catalog: the
    served promise allows no unverified claim). Only colour, type, pattern and material words.

    Exempt, so that honest sentences stay possible: phrases the request or a source (a purchased
    item's title) contains verbatim, and every word for a value the request names ("you asked for
    red, but it is black"; "not red"). The post-check still judges what is said with them. Also
    exempt: a phrase that starts an allowed longer one ("shirt" of "shirt dress" for a dress). Serving
    passes a request only where the model answers the shopper's own words (llava's `answer_stream`);
    the item text it composes rationales from is constrained with no request, so nothing is exempt."""
    key = (tuple(sorted((k, tuple(sorted(v))) for k, v in values.items() if v)), request or "", tuple(sources), unverified)
    return list(_forbidden(*key))


@lru_cache(maxsize=8192)
def _phrase_table() -> tuple[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], ...]:
    from retrieval.vocabulary import DEFAULT

    return tuple((k, tuple(v)) for k, v in DEFAULT.phrases().items())


@lru_cache(maxsize=8192)
def _forbidden(values_key: tuple, request: str, sources: tuple[str, ...], unverified: bool) -> tuple[str, ...]:
    values = {k: set(v) for k, v in values_key}
    said: set[tuple[str, ...]] = set()
    for text in (request, *sources):
        toks = tokens(text)
        said |= {tuple(toks[i:j]) for i in range(len(toks)) for j in range(i + 1, min(len(toks), i + 6) + 1)}
    asked = {(t.kind, t.value) for t in extract_terms(request)}
    banned: set[tuple[str, ...]] = set()
    allowed: set[tuple[str, ...]] = set()
    for toks, readings in _phrase_table():
        kinds = {k for k, _ in readings}
        if "product_type" in kinds:
            readings = [r for r in readings if r[0] == "product_type"]  # the type is the claim (see `primary`)
        elif not kinds <= set(CONSTRAINED_KINDS):
            allowed.add(toks)  # (also) a word of another kind (department, fit): not ours to police
            continue
        if any(r in asked for r in readings) or toks in said:
            allowed.add(toks)
            continue
        _, v = judge([Term(k, val, " ".join(toks)) for k, val in readings], values)
        (banned if v is False or (v is None and unverified) else allowed).add(toks)
    starts = {a[:n] for a in allowed for n in range(1, len(a))}
    return tuple(sorted(" ".join(t) for t in banned if t not in starts))


# scores and ranks belong in the evidence, never in shopper-facing text (and no claim of a rank the search did not give)
_SCORE_OR_RANK = re.compile(
    r"\bscores?\b|\bsimilarity\b|(?<![\w.])[-+]?0?\.\d+\b|(?<![\w.])-\d+\.\d+\b|\branked\b|\branks?\s+(?:first|second|third|top|high|highest|#?\d)|"
    r"\b(?:closest|nearest|best|top|highest|first)\s+(?:\w+\s+)?(?:match|matches|result|results|hit|hits|pick)\b|"
    r"\bnumber\s+one\b|#\s?\d+\b|\bin\s+the\s+search\b",
    re.IGNORECASE)


# every match of _SCORE_OR_RANK holds one of these (or a digit): most texts hold none, and the
# pattern itself is tried at every position (a fifth of a served rationale's check)
_SCORE_HINTS = ("scor", "simil", "rank", "close", "near", "best", "top", "high", "first", "number", "search", "#")
_DIGIT = re.compile(r"\d")


def score_claims(text: str) -> list[str]:
    """Phrases of a text that cite a retrieval score or claim a search rank ('score 0.31',
    'among the closest matches', 'the top result')."""
    low = text.lower()
    if not any(h in low for h in _SCORE_HINTS) and not _DIGIT.search(text):
        return []
    return [m.group(0) for m in _SCORE_OR_RANK.finditer(text)]


# Words an item sentence may use beyond the item's own catalog words: grammar and the frames the
# tuned model writes details in ("The description mentions ...", "Good to know: ...").
_FRAME_WORDS = frozenset("""a an the and or of for to in on at with by from as is are was be it its it's this that these those
they them their has have having made which who also both each one ones two three pair pack set
description mentions mention catalog adds says lists good know to details detail features feature item product
""".split())
_REQUEST_WORDS = re.compile(r"\b(?:you|your|asked|request|requested|match|matches|fits?|falls?|short|missing|no|not|nothing)\b", re.I)


def _stems(word: str) -> set[str]:
    out = {word}
    for suffix in ("es", "s", "ed", "ing", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            out.add(word[: -len(suffix)])
    return out


def catalog_backed_sentences(text: str, product: Product) -> str:
    """The sentences of `text` whose every content word is one of the item's own catalog words (title,
    description, facts), each with at least two of them. Why: the attribute check judges only
    vocabulary words, so "a hair-covered watch" would pass it; an item text served without a request
    must repeat what the catalog says, word by word. Sentences about a request (a request word such as
    "you", "fits", "short" that is not the item's own catalog word), and sentences that add no word to
    those kept before them, are dropped."""
    own: set[str] = set()
    for w in re.findall(r"[a-z0-9]+", _catalog_text(product).lower()):
        own |= _stems(w)
    kept: list[str] = []
    said: set[str] = set()
    for sentence in re.split(r"(?<=[.!?])\s+", " ".join((text or "").split())):
        if not sentence or any(not (_stems(m.group(0).lower()) & own) for m in _REQUEST_WORDS.finditer(sentence)):
            continue  # talk about a request; a request word the catalog itself uses ("short sleeves", "regular fit") is the item's
        words = re.findall(r"[a-z0-9]+", sentence.lower())
        content = [w for w in words if w not in _FRAME_WORDS]
        backed = [w for w in content if _stems(w) & own]
        if len(backed) >= 2 and len(backed) == len(content) and not set(content) <= said:  # nothing new: a repeat
            kept.append(sentence if sentence[-1] in ".!?" else sentence + ".")
            said |= set(content)
    return " ".join(kept)
