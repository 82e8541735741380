"""What to ask about which item: shopper-like requests, candidates, questions, and the split.

A `Task` is one instruction example before its answer is written: the kind, the item(s), the
shopper's request or question. The `Planner` draws tasks from a catalog; both generators
(template and openai) answer the same tasks, so they differ only in wording.

Requests are built from an anchor item's verified values in a shopper's words (synonyms, plurals,
occasions, "not too tight"), then candidates are drawn for the request with any callable
`candidates(request, k) -> [item_id]` (default: `AttributeCandidates`, a vocabulary match over the
catalog; the lead's `retrieval.search.Searcher` fits the same slot). A hard negative is a candidate
the request's facts do not fully back.
"""
from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from retrieval.catalog import Catalog, Product
from retrieval.vocabulary import SYNONYMS, accepts, item_values
from synth_data.details import DETAIL_QUESTIONS, detail_answer
from synth_data.explain import Evidence, gather_evidence, request_terms
from synth_data.phrasing import ItemView, article, reads_as

Candidates = Callable[[str, int], list[str]]

KINDS = ("rationale", "question", "comparison", "description")
QUESTION_TYPES = ("colour", "material", "fit", "occasion", "care", "picture", "unanswerable", "detail")
SPLITS = ("train", "val", "heldout")
# what a prompt can leave out: thin-text items keep only the title; describe-from-picture shows no text at all
WITHHOLD = ("description", "attributes")
WITHHOLD_ALL = ("title", "description", "attributes")


@dataclass
class Task:
    """One instruction example to be answered."""

    kind: str  # rationale | question | comparison | description
    items: list[Product]
    request: str | None = None  # the shopper's request (rationale, comparison)
    question: str | None = None  # the shopper's question (question, description)
    qtype: str | None = None  # question type, see QUESTION_TYPES
    hard_negative: bool = False
    split: str = "train"
    meta: dict = field(default_factory=dict)
    images: list[str] = field(default_factory=list)  # each item's photo (absolute), when it has one
    withhold: tuple[str, ...] = ()  # catalog text left out of the prompt (see WITHHOLD): the picture must carry it

    @property
    def item(self) -> Product:
        return self.items[0]

    @property
    def words(self) -> str:
        """What the shopper said (quotable in the answer)."""
        return self.request or self.question or ""


def split_of(product: Product, val_fraction: float, salt: str = "whyrec", heldout_fraction: float = 0.0) -> str:
    """'train', 'val' or 'heldout' by a hash of the product group, so colour variants never straddle
    the split. 'heldout' groups are never planned into instruction data (they are for evaluation)."""
    key = (product.group_id or product.id) + "\x1f" + salt
    bucket = int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big") % 10_000
    if bucket < val_fraction * 10_000:
        return "val"
    return "heldout" if bucket < (val_fraction + heldout_fraction) * 10_000 else "train"


class AttributeCandidates:
    """Items ranked by how many of a request's vocabulary terms their facts make true (product type
    weighs most, a negated term counts against; ties in a fixed pseudo-random order per request).
    Built once per catalog from the vocabulary; no vectors, no index."""

    WEIGHTS = {"product_type": 3.0, "colour": 2.0}

    def __init__(self, catalog: Catalog, values: dict[str, dict[str, set[str]]] | None = None):
        self.catalog = catalog
        self.ids = list(catalog.ids)
        values = values or {p.id: item_values(p) for p in catalog.products}
        index: dict[tuple[str, str], list[int]] = defaultdict(list)
        for n, item_id in enumerate(self.ids):
            for kind, vs in values[item_id].items():
                for v in vs:
                    index[(kind, v)].append(n)
        self.index = {key: np.asarray(rows, dtype=np.int64) for key, rows in index.items()}
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self.tiebreak = np.random.default_rng(0).permutation(len(self.ids)).astype(np.int64)

    def _having(self, kind: str, value: str) -> np.ndarray:
        key = (kind, value)
        if key not in self._cache:
            parts = [self.index[(kind, v)] for v in accepts(kind, value) if (kind, v) in self.index]
            self._cache[key] = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        return self._cache[key]

    def __call__(self, request: str, k: int = 20) -> list[str]:
        score = np.zeros(len(self.ids))
        for rt in request_terms(request):
            w = self.WEIGHTS.get(rt.term.kind, 1.0)
            parts = [self._having(r.kind, r.value) for r in rt.readings]
            having = parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))
            score[having] += -w if rt.term.negated else w
        rows = np.flatnonzero(score > 0)
        if not len(rows):
            return []
        salt = int.from_bytes(hashlib.sha1(request.encode()).digest()[:4], "big")
        tie = (self.tiebreak[rows] * 2654435761 + salt) % 1_000_003
        order = np.lexsort((tie, -score[rows]))[:k]
        return [self.ids[i] for i in rows[order]]


def searcher_candidates(searcher) -> Candidates:
    """Candidates from any object with `search(query, k) -> [hit with .id]`, e.g. the lead's
    `retrieval.search.Searcher`: the dense + attribute retrieval whyrec serves with."""
    def candidates(request: str, k: int = 20) -> list[str]:
        return [h.id for h in searcher.search(request, k)] if request.strip() else []

    return candidates


# ----- shopper requests -----
OCCASIONS_SPORT = ["for the gym", "for yoga", "for running", "for a workout", "for training", "for fitness", "for sports"]
OCCASIONS_FREE = ["for work", "for a wedding", "for summer", "for a night out", "for everyday", "for holidays",
                  "to wear at home", "for a date", "for the office", "for a festival", "for autumn", ""]
AUDIENCE = {"women": ["for women", "women's", "for her", "ladies"], "men": ["for men", "men's", "for him"],
            "kids": ["for kids", "for my kids", "children's", "for girls", "for boys"], "baby": ["for a baby", "for my newborn", "baby"],
            "teen": ["for teens", "teen"]}
FIT_WANT = {"slim": ["slim fit", "fitted", "skinny"], "loose": ["oversized", "relaxed", "loose", "baggy"],
            "regular": ["regular fit"], "high waist": ["high-waisted", "high waist"]}
FIT_AVOID = {"slim": ["not too tight", "nothing too tight", "not skinny"], "loose": ["nothing baggy", "not oversized", "not too loose"]}
PATTERN_AVOID = ["no print", "nothing patterned", "without a print", "not printed"]
OPENERS = ["", "", "", "hi, ", "hey! ", "hello, ", "quick question: "]
FRAMES = ["{np}", "looking for {np}", "I need {np}", "do you have {np}?", "{np} please", "any ideas for {np}?",
          "searching for {np}", "I want {np}", "something like {np}", "can you find me {np}?", "show me {np}"]


def _phrase(kind: str, value: str, rng: random.Random) -> str:
    """A shopper's word for a value: any synonym that reads back as it ('navy' for dark blue)."""
    opts = [p for p in SYNONYMS.get(kind, {}).get(value, [value]) if reads_as(p, kind, value)] or [value]
    return opts[0] if rng.random() < 0.5 else rng.choice(opts)


def sample_request(view: ItemView, rng: random.Random) -> str:
    """A request the anchor item satisfies, in a shopper's words."""
    v = view.values
    parts_pre: list[str] = []  # adjectives before the noun
    if v["colour"] and rng.random() < 0.7:
        parts_pre.append(_phrase("colour", view.first("colour"), rng))
    pattern = view.first("pattern")
    if pattern and pattern not in ("solid", "denim") and rng.random() < 0.35:
        parts_pre.insert(0, _phrase("pattern", pattern, rng))
    mats = sorted(m for m in v["material"] if m != pattern and m != "denim")
    if mats and rng.random() < 0.25:
        parts_pre.append(_phrase("material", rng.choice(mats), rng))
    ptype = view.first("product_type")
    plural = view.plural
    if ptype and rng.random() < 0.85:
        noun = _phrase("product_type", ptype, rng)
        if noun.endswith("s") and not noun.endswith("ss"):
            plural = True
    else:
        noun = "something"
        plural = True
    if noun == "something" and parts_pre:
        np = "something " + " ".join(parts_pre)
    else:
        np = " ".join(parts_pre + [noun])
        if not plural:
            np = article(np)
    post: list[str] = []
    depts = v["department"]
    if "sport" in depts and rng.random() < 0.7:
        post.append(rng.choice(OCCASIONS_SPORT))
    else:
        aud = sorted(d for d in depts if d in AUDIENCE)
        if aud and rng.random() < 0.35:
            word = rng.choice(AUDIENCE[aud[0]])
            if word.startswith("for ") or noun == "something":
                post.append(word if word.startswith("for ") else rng.choice([w for w in AUDIENCE[aud[0]] if w.startswith("for ")]))
            else:
                np = f"{word} {' '.join(parts_pre + [noun])}" if plural else article(f"{word} {' '.join(parts_pre + [noun])}")
        elif rng.random() < 0.4:
            post.append(rng.choice(OCCASIONS_FREE))
    fits = sorted(v["fit"])
    r = rng.random()
    if fits and r < 0.3:
        post.append(rng.choice(FIT_WANT[fits[0]]) if rng.random() < 0.5 else ", " + rng.choice(FIT_WANT[fits[0]]) + " please")
    elif fits and r < 0.5:
        avoid = "loose" if "slim" in fits else "slim" if "loose" in fits else None
        if avoid:
            post.append(", " + rng.choice(FIT_AVOID[avoid]))
    if pattern == "solid" and rng.random() < 0.12:
        post.append(", " + rng.choice(PATTERN_AVOID))
    text = np + "".join((" " + p if not p.startswith(",") else p) for p in post if p)
    frame = rng.choice(FRAMES)
    out = rng.choice(OPENERS) + frame.format(np=text)
    return " ".join(out.split()).replace(" ,", ",")


# ----- questions -----
OPEN_Q = {
    "colour": ["What colour is it?", "Which colour is this?", "What colour would you call this?", "what colour is this one"],
    "material": ["What is it made of?", "What fabric is this?", "What material is it?", "what's the fabric?"],
    "fit": ["How does it fit?", "Is it loose or close to the body?", "What is the fit like?", "how is the cut?"],
    "care": ["How should I wash it?", "Can it go in the tumble dryer?", "Does it need dry cleaning?", "How do I care for it?",
             "what are the washing instructions?"],
    "picture": ["What is in the picture?", "What does the photo show?", "What do you see in this image?", "What item is shown here?"],
}
YESNO_Q = {"colour": ["Is it {x}?", "Is this {x}?", "Would you say it is {x}?"],
           "material": ["Is it {x}?", "Is this made of {x}?", "Is the fabric {x}?"],
           "fit": ["Is it {x}?", "Would you call it {x}?"]}
OCCASION_Q = {"sport": ["Can I wear this to the gym?", "Is this good for a workout?", "Could I go running in this?", "Is it made for sport?"],
              "swim": ["Can I swim in this?", "Is this for the pool?", "Would this work for swimming?"],
              "free": ["Can I wear it to the office?", "Is it good for a wedding?", "Would this work for a night out?",
                       "Is it warm enough for winter?", "Is it nice for a summer party?"]}
UNANSWERABLE = {  # question -> (topic for the answer, fact keys that would answer it)
    "What sizes does it come in?": ("which sizes it comes in", ("size", "sizes")),
    "Is it waterproof?": ("whether it is waterproof", ("waterproof",)),
    "Where was it made?": ("where it was made", ("country_of_origin", "origin")),
    "Does it run small or large?": ("how the sizes run", ("size_fit",)),
    "How long does delivery take?": ("anything about delivery", ("delivery",)),
    "Is it in stock?": ("whether it is in stock", ("stock", "availability")),
    "Who designed it?": ("who designed it", ("designer", "brand")),
    "Is it ethically made?": ("how it was made", ("sustainability",)),
}
DESCRIBE_Q = ["Describe this item.", "Describe what is in the picture.", "Give me a short description of this product.",
              "What can you tell me about this?", "Describe it for a shopper who cannot see the image."]
COMPARE_Q = ["Which of the two fits my request better?", "Which one should I pick?", "Compare the two for me.",
             "Which is the better match, A or B?"]


def sample_question(view: ItemView, qtype: str, rng: random.Random, catalog_colours: Sequence[str]) -> tuple[str, dict]:
    """A shopper's question of one type, and what was asked (for the answer)."""
    meta: dict = {}
    if qtype in YESNO_Q and rng.random() < 0.5:
        kind = qtype
        have = sorted(view.values.get(kind) or ())
        if kind == "colour":
            pool = list(catalog_colours)
        elif kind == "material":
            pool = ["cotton", "wool", "linen", "silk", "polyester", "denim", "jersey", "leather", "viscose"]
        else:
            pool = ["slim", "loose", "regular", "high waist"]
        value = rng.choice(have) if have and rng.random() < 0.5 else rng.choice(pool)
        x = _phrase(kind, value, rng)
        meta = {"asked": value, "yesno": True}
        return rng.choice(YESNO_Q[kind]).format(x=x), meta
    if qtype == "occasion":
        sub = "sport" if rng.random() < 0.45 else "swim" if rng.random() < 0.35 else "free"
        meta = {"occasion": sub}
        return rng.choice(OCCASION_Q[sub]), meta
    if qtype == "unanswerable":
        q = rng.choice(sorted(UNANSWERABLE))
        meta = {"topic": UNANSWERABLE[q][0], "keys": list(UNANSWERABLE[q][1])}
        return q, meta
    return rng.choice(OPEN_Q[qtype]), meta


# ----- the planner -----
class Planner:
    """Draws tasks from a catalog with a seeded random generator (same seed, same tasks)."""

    def __init__(self, catalog: Catalog, seed: int = 0, kinds: dict[str, float] | None = None,
                 question_types: dict[str, float] | None = None, hard_negative_fraction: float = 0.35,
                 val_fraction: float = 0.1, candidates: Candidates | None = None, candidates_k: int = 20,
                 require_image: bool = True, heldout_fraction: float = 0.0, thin_fraction: float = 0.0,
                 splits: Sequence[str] = ("train", "val")):
        self.catalog = catalog
        self.rng = random.Random(seed)
        self.kinds = kinds or {"rationale": 0.4, "question": 0.3, "comparison": 0.15, "description": 0.15}
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown example kind(s) {sorted(unknown)}; known: {list(KINDS)}")
        self.qtypes = question_types or {q: 1.0 for q in QUESTION_TYPES}
        unknown = set(self.qtypes) - set(QUESTION_TYPES)
        if unknown:
            raise ValueError(f"unknown question type(s) {sorted(unknown)}; known: {list(QUESTION_TYPES)}")
        self.hard_negative_fraction = hard_negative_fraction
        self.val_fraction = val_fraction
        self.candidates_k = candidates_k
        self.views: dict[str, ItemView] = {p.id: ItemView(p) for p in catalog.products}
        self.candidates = candidates or AttributeCandidates(catalog, {i: v.values for i, v in self.views.items()})
        self.thin_fraction = thin_fraction
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; known: {list(SPLITS)}")
        self.split = {p.id: split_of(p, val_fraction, heldout_fraction=heldout_fraction) for p in catalog.products}
        if require_image:
            pool = [p for p in catalog.products if (f := catalog.image_file(p)) is not None and f.exists()]
        else:
            pool = list(catalog.products)
        pool = [p for p in pool if self.split[p.id] in splits]  # held-out groups never reach the data
        if not pool:
            raise ValueError("no catalog item (in the planned splits) has an image file; pass require_image=False for text-only data")
        self.pool = pool
        self.colours = sorted({c for v in self.views.values() for c in v.values["colour"]}) or ["black"]

    def _pick(self, weights: dict[str, float]) -> str:
        names = [k for k, w in weights.items() if w > 0]
        return self.rng.choices(names, weights=[weights[k] for k in names])[0]

    def _fits(self, request: str, item_id: str) -> Evidence:
        return gather_evidence(request, self.catalog[item_id], values=self.views[item_id].values)

    def positive_and_negative(self, request: str, anchor: Product) -> tuple[Product, Product | None]:
        """The best-fitting candidate and a near miss (a candidate the facts do not fully back),
        both in the anchor's split."""
        split = self.split[anchor.id]
        ids = [i for i in self.candidates(request, self.candidates_k) if i in self.catalog and self.split[i] == split]
        positive, negative = anchor, None
        for i in ids:
            ev = self._fits(request, i)
            if not ev.unmet and ev.matched and positive is anchor and i != anchor.id and self.rng.random() < 0.5:
                positive = self.catalog[i]
            if ev.unmet and ev.matched and negative is None:
                negative = self.catalog[i]
        if negative is None:  # relax the request by one term and look for an item that misses it
            terms = [rt for rt in request_terms(request) if rt.term.kind != "product_type"]
            self.rng.shuffle(terms)
            for rt in terms[:2]:
                relaxed = re.sub(re.escape(rt.quote), " ", request, flags=re.IGNORECASE)
                relaxed_ids = self.candidates(relaxed, self.candidates_k * 3)
                for i in relaxed_ids:
                    if i in self.catalog and self.split[i] == split and i != anchor.id:
                        ev = self._fits(request, i)
                        if ev.unmet and ev.matched:
                            negative = self.catalog[i]
                            break
                if negative is not None:
                    break
        return positive, negative

    def task(self) -> Task:
        task = self._task()
        for p in task.items:
            f = self.catalog.image_file(p)
            if f is not None and f.exists():
                task.images.append(str(f.resolve()))
        if len(task.images) != len(task.items):
            task.images = []  # all or nothing, so image i is always item i
        return task

    def _task(self) -> Task:
        kind = self._pick(self.kinds)
        anchor = self.rng.choice(self.pool)
        view = self.views[anchor.id]
        split = self.split[anchor.id]
        if kind in ("rationale", "comparison"):
            request = sample_request(view, self.rng)
            positive, negative = self.positive_and_negative(request, anchor)
            if kind == "comparison":
                if negative is None:
                    kind = "rationale"
                else:
                    pair = [positive, negative]
                    self.rng.shuffle(pair)
                    q = self.rng.choice(COMPARE_Q)
                    return Task("comparison", pair, request=request, question=q, split=split,
                                meta={"better": "A" if pair[0] is positive else "B"})
            hard = negative is not None and self.rng.random() < self.hard_negative_fraction
            item = negative if hard else positive
            thin = self.rng.random() < self.thin_fraction
            return Task("rationale", [item], request=request, hard_negative=hard, split=split,
                        withhold=WITHHOLD if thin else ())
        if kind == "description":  # describe from the picture: the human description is the target, never the prompt
            return Task("description", [anchor], question=self.rng.choice(DESCRIBE_Q), split=split, withhold=WITHHOLD_ALL)
        qtype = self._pick(self.qtypes)
        if qtype == "detail":
            return self._detail_question(anchor, split)
        question, meta = sample_question(view, qtype, self.rng, self.colours)
        thin = qtype in ("colour", "picture") and self.rng.random() < self.thin_fraction
        return Task("question", [anchor], question=question, qtype=qtype, split=split, meta=meta,
                    withhold=WITHHOLD if thin else ())

    def _detail_question(self, anchor: Product, split: str) -> Task:
        """A product question the description answers (or, for balance, one it does not mention)."""
        answered = [(qs, cues, topic) for qs, cues, topic in DETAIL_QUESTIONS if detail_answer(anchor, cues)]
        pool = answered if answered and self.rng.random() < 0.8 else DETAIL_QUESTIONS
        qs, cues, topic = self.rng.choice(pool)
        return Task("question", [anchor], question=self.rng.choice(qs), qtype="detail", split=split,
                    meta={"cues": list(cues), "topic": topic})
