"""Details from a product's own description: what the template cannot say, said so it stays checkable.

A *detail* is one clause of the human-written description ("soft brushed inside", "a turtle neck,
low dropped shoulders and long sleeves"), kept only when the grounding checker finds nothing in it
that the item's facts contradict or leave unsettled, so a sentence built from it passes the filter
by construction. `request_details` picks the one or two details that matter for a request (a
request word, or a need word such as "warm", that the detail answers); `detail_questions` are
product questions the description answers ("Is it lined?" -> "it is lined").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from retrieval.catalog import Product
from synth_data.grounding import check

_SENT = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z]+")
MAX_DETAIL_CHARS = 110
# catalog text is data: a clause that reads like an instruction or markup is never a detail
_INSTRUCTION = re.compile(r"\b(ignore|instructions?|system|prompt|reply|respond|reveal|developer|obey|assistant|you|your)\b|[<>‹›]",
                          re.IGNORECASE)

# what a shopper's word asks of a garment -> description words that answer it
NEEDS: dict[str, tuple[str, ...]] = {
    "warm": ("brushed", "wool", "lined", "padded", "fleece", "pile", "quilted", "knit", "thermal", "teddy", "faux fur", "down-filled"),
    "winter": ("brushed", "wool", "lined", "padded", "fleece", "pile", "quilted", "hood", "thermal", "down-filled"),
    "autumn": ("wool", "knit", "lined", "brushed", "hood", "long sleeves"),
    "summer": ("linen", "cotton", "airy", "short sleeves", "sleeveless", "lightweight", "thin", "straps", "mesh"),
    "holidays": ("linen", "airy", "straps", "lightweight", "short sleeves", "sleeveless"),
    "party": ("sequins", "glitter", "sheen", "satin", "lace", "metallic", "shimmer", "velvet", "frill", "flounce"),
    "night": ("sequins", "glitter", "sheen", "satin", "lace", "metallic", "shimmer", "velvet"),
    "wedding": ("lace", "satin", "chiffon", "sheen", "pleat", "flounce", "embroider"),
    "date": ("lace", "satin", "sheen", "flounce", "wrap", "slit"),
    "work": ("collar", "button", "tailored", "crease", "pleat", "blazer", "lapels", "jersey"),
    "office": ("collar", "button", "tailored", "crease", "pleat", "lapels"),
    "gym": ("fast-drying", "drymove", "sports", "stretch", "breathable", "elasticated", "mesh", "reflective"),
    "running": ("fast-drying", "drymove", "reflective", "breathable", "stretch", "mesh"),
    "yoga": ("stretch", "soft", "elasticated", "high waist", "seamless"),
    "workout": ("fast-drying", "drymove", "stretch", "breathable", "elasticated"),
    "training": ("fast-drying", "drymove", "stretch", "breathable", "elasticated"),
    "fitness": ("fast-drying", "drymove", "stretch", "breathable", "elasticated"),
    "sports": ("fast-drying", "drymove", "stretch", "breathable", "elasticated"),
    "home": ("soft", "elasticated", "brushed", "pyjama", "jersey", "relaxed"),
    "everyday": ("soft", "cotton", "jersey", "pockets", "elasticated"),
    "festival": ("fringe", "print", "denim", "crochet", "straps"),
    "comfortable": ("soft", "stretch", "elasticated", "relaxed", "jersey"),
    "baby": ("soft", "press-studs", "organic", "cotton"),
    "newborn": ("soft", "press-studs", "organic", "cotton"),
    "kids": ("soft", "elasticated", "adjustable", "press-studs"),
    "tight": ("stretch", "elasticated", "relaxed", "loose", "wide"),
}

# product questions the description can answer: (question wordings, description words, topic)
DETAIL_QUESTIONS: list[tuple[tuple[str, ...], tuple[str, ...], str]] = [
    (("Does it have pockets?", "Are there any pockets?", "any pockets?"), ("pocket",), "pockets"),
    (("Is it lined?", "Does it have a lining?"), ("lined", "lining", "unlined"), "a lining"),
    (("What are the sleeves like?", "Does it have long sleeves?", "how long are the sleeves?"),
     ("sleeve", "sleeveless"), "the sleeves"),
    (("What is the neckline like?", "What kind of neck does it have?", "Does it have a collar?"),
     ("neck", "collar", "lapel", "hood"), "the neckline"),
    (("How does it fasten?", "Does it have a zip or buttons?", "how do I close it?"),
     ("zip", "button", "press-stud", "hook", "tie", "drawstring", "velcro", "buckle"), "how it fastens"),
    (("What is the waist like?", "Does it have an elastic waist?"), ("waist", "waistband"), "the waist"),
    (("Is it warm inside?", "Is it soft inside?"), ("brushed", "padded", "fleece", "pile", "lined"), "the inside"),
    (("Does it stretch?", "Is the fabric stretchy?"), ("stretch", "elastane"), "stretch"),
    (("What are the straps like?", "Are the straps adjustable?"), ("strap",), "the straps"),
    (("What is the hem like?", "How is the hem finished?"), ("hem",), "the hem"),
]


@dataclass(frozen=True)
class Detail:
    text: str  # lower-case clause, no final full stop: "soft brushed inside"
    words: frozenset[str]
    sentence: int  # which sentence of the description it comes from
    whole: bool  # the whole sentence (False: a part of a long one)


def _sentences(description: str) -> list[str]:
    return [s.strip().rstrip(".!").strip() for s in _SENT.split(" ".join(description.split())) if s.strip().rstrip(".!").strip()]


def _parts(sentence: str) -> list[str]:
    """'Jacket in a viscose weave with a sheen, covered buttons' -> its 'with'/comma parts."""
    parts = [p.strip() for p in re.split(r"\s+with\s+|,\s+(?=[a-z])", sentence) if p.strip()]
    return [p for p in parts if 3 <= len(p) <= MAX_DETAIL_CHARS] if len(parts) > 1 else []


_CACHE: dict[tuple[str, str], tuple[Detail, ...]] = {}


def _usable(text: str, product: Product) -> bool:
    if text.startswith(("size ", "sizes ", "the model", "model is")) or _INSTRUCTION.search(text):
        return False
    res = check(text, product)
    return not res.contradicted and not res.not_stated


def _details(product: Product) -> tuple[Detail, ...]:
    """Whole sentences that pass the checker; the parts of long ones, and of failing ones (a
    'Top in sweatshirt fabric with a lined hood' for a hoodie still gives 'a lined hood')."""
    key = (product.id, product.description)
    if key in _CACHE:
        return _CACHE[key]
    out = []
    for n, sent in enumerate(_sentences(product.description)):
        text = sent[0].lower() + sent[1:]
        ok = _usable(text, product)
        if ok:
            out.append(Detail(text, frozenset(_WORD.findall(text.lower())), n, True))
        if not ok or len(text) > MAX_DETAIL_CHARS:
            for part in _parts(text):
                part = part[0].lower() + part[1:]
                if _usable(part, product):
                    out.append(Detail(part, frozenset(_WORD.findall(part.lower())), n, False))
    if len(_CACHE) > 65536:
        _CACHE.clear()
    _CACHE[key] = tuple(out)
    return _CACHE[key]


def description_details(product: Product, whole: bool | None = None) -> list[Detail]:
    """The description's clauses that the grounding checker finds nothing wrong with (`whole`:
    only whole sentences, True, or only the short ones a rationale can carry, False)."""
    if not product.description.strip():
        return []
    out = list(_details(product))
    if whole is True:
        return [d for d in out if d.whole]
    if whole is False:
        return [d for d in out if len(d.text) <= MAX_DETAIL_CHARS and "exclusive" not in d.words]
    return out


def _has(detail: Detail, word: str) -> bool:
    return (word in detail.words) if " " not in word and "-" not in word else (word in detail.text)


def _stem_hit(detail: Detail, cue: str) -> bool:
    return _has(detail, cue) or any(w.startswith(cue) for w in detail.words)


def request_details(product: Product, request: str, named: set[str] = frozenset(), k: int = 2) -> list[str]:
    """Up to `k` details that matter for the request: a need word of the request ("warm") that a
    detail answers first, then details in description order. A detail that only repeats a word the
    request already named (`named`, lower-case words) is skipped: it tells the shopper nothing new."""
    details = description_details(product, whole=False)
    if not details:
        return []
    req_words = set(_WORD.findall(request.lower()))
    scored = []
    for n, d in enumerate(details):
        if d.words and d.words <= (req_words | named | {"a", "an", "the", "in", "with", "and", "of"}):
            continue
        score = sum(1 for w, cues in NEEDS.items() if w in req_words for cue in cues if _stem_hit(d, cue))
        scored.append((-score, d.sentence == 0, n, d.text))  # the opening sentence mostly restates the type
    scored.sort()
    out: list[str] = []
    for *_, t in scored:
        if len(out) < k and not any(t in o or o in t for o in out):
            out.append(t)
    return out


def detail_answer(product: Product, cues: tuple[str, ...]) -> str | None:
    """The parts of the first detail that name a cue word (a stem: 'pocket' finds 'pockets'):
    "flounced shoulder straps" of "a flounce at the top, flounced shoulder straps and ...", or None."""
    for d in description_details(product, whole=False):
        if any(_stem_hit(d, c) for c in cues):
            parts = [p.strip() for p in re.split(r",?\s+and\s+|,\s+", d.text) if p.strip()]
            hits = [p for p in parts if any(_stem_hit(Detail(p, frozenset(_WORD.findall(p)), 0, False), c) for c in cues)]
            if hits and len(" and ".join(hits)) < len(d.text):
                text = " and ".join(dict.fromkeys(hits))
                if not check(text, product).contradicted and not check(text, product).not_stated:
                    return text
            return d.text
    return None


_FACT_STOP = frozenset("a an the in of with and or at to on for from by its it is are this that as some soft".split())


def description_facts(product: Product) -> list[frozenset[str]]:
    """The description's facts as content-word sets, one per comma/'and'/'with' chunk ('a turtle neck', 'jumper in a soft knit')."""
    chunks = re.split(r"[.;:]|,|\band\b|\bwith\b", product.description.lower())
    out: list[frozenset[str]] = []
    for c in chunks:
        words = frozenset(w for w in re.findall(r"[a-z][a-z-]+", c) if w not in _FACT_STOP and len(w) > 2)
        if words and words not in out:
            out.append(words)
    return out


def stated_facts(text: str, product: Product, request: str = "") -> int:
    """Distinct description facts a text states that the request did not name: a fact counts when all its
    content words are in the text and not all of them are in the request or the item's attribute values
    (the issue's informativeness; the offline item-text job also stops retrying at enough of them)."""
    said = set(re.findall(r"[a-z][a-z-]+", text.lower()))
    named = set(re.findall(r"[a-z][a-z-]+", request.lower()))
    attrs = set(re.findall(r"[a-z][a-z-]+", " ".join(str(v) for v in product.facts().values()).lower()))
    return sum(1 for f in description_facts(product) if f <= said and not f <= (named | attrs))
