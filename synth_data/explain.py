"""Grounded explanations: why an item fits a request, said only from verified evidence.

`gather_evidence` reads the request and the item through the vocabulary and sorts the request's
terms into matched / unmet / unknown with the grounding checker's own `verdict`; it adds the
search score and what the item shares with the shopper's purchases. `GroundedExplainer` turns that
evidence into sentences (several wordings, chosen deterministically per request and item). It is
the serving default, and the fallback when a model's rationale fails the check. Catalog text is
never copied into the rationale except as a quotation, so instructions hidden in a description
cannot steer it.

What a served rationale promises (`settle`, the one check-and-fallback path every explainer's
text goes through): it states no attribute value the catalog contradicts, and no more than
`max_unverified` (default 0) attribute values the catalog does not back; scores and ranks stay in
the evidence, never in the text. A text that breaks the promise is replaced by the fallback's (the
grounded template, itself checked), and, should that fail too, by the catalog's plain description
of the item; every replacement says why in `fallback_reason`.
"""
from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Callable, Protocol

from retrieval.catalog import Product
from retrieval.vocabulary import NEGATIONS, Term, accepts, item_values
from synth_data.grounding import OPEN_GROUPS, GroundingResult, by_word, check, clauses, judge, read_clause, score_claims
from synth_data.phrasing import Bank, ItemView, article, cap, join

log = logging.getLogger(__name__)

KIND_WORDS = {"colour": "the colour", "product_type": "the type", "pattern": "the pattern", "material": "the fabric",
              "department": "the range", "fit": "the cut"}


@dataclass
class RequestTerm:
    """A term of the shopper's request and the request's own words for it (for quoting). A word
    with two readings ("lace": pattern and material) keeps both; `term` is the one judged."""

    term: Term
    quote: str
    readings: list[Term] = field(default_factory=list)


@dataclass
class HistoryLink:
    """A purchased item that shares verified attribute values with the explained one."""

    item_id: str
    title: str
    shared: list[tuple[str, str]]  # (kind, value)


@dataclass
class Evidence:
    """Everything an explanation may say, each piece verified against the catalog."""

    request: str
    matched: list[RequestTerm] = field(default_factory=list)  # request terms the item's facts make true
    unmet: list[RequestTerm] = field(default_factory=list)  # request terms the facts contradict
    unknown: list[RequestTerm] = field(default_factory=list)  # request terms the facts do not settle
    facts: dict[str, list[str]] = field(default_factory=dict)  # the item's vocabulary values per kind
    score: float | None = None  # retrieval similarity, when the item came from a search (evidence only, never said)
    history: list[HistoryLink] = field(default_factory=list)

    @property
    def matched_terms(self) -> list[Term]:
        return [r.term for r in self.matched]

    def to_dict(self) -> dict:
        def rt(items: list[RequestTerm]) -> list[dict]:
            return [{"kind": r.term.kind, "value": r.term.value, "negated": r.term.negated, "quote": r.quote} for r in items]

        return {"request": self.request, "matched": rt(self.matched), "unmet": rt(self.unmet), "unknown": rt(self.unknown),
                "facts": self.facts, "score": self.score, "history": [asdict(h) for h in self.history]}


@dataclass
class Rationale:
    text: str
    facts_used: list[str]
    backend: str
    fallback_reason: str | None = None  # set whenever the text is not the asked backend's own
    unverified: list[str] = field(default_factory=list)  # attribute claims the catalog does not settle ('colour: navy')


def request_terms(request: str) -> list[RequestTerm]:
    """The request's attribute terms, clause by clause, each with the request words that name it
    (including its negation: "not too tight")."""
    return [RequestTerm(rt.term, rt.quote, list(rt.readings)) for rt in _request_terms(request)]


@lru_cache(maxsize=4096)
def _request_terms(request: str) -> tuple[RequestTerm, ...]:
    out: list[RequestTerm] = []
    seen: set[tuple] = set()
    for clause in clauses(request):
        toks, terms, _ = read_clause(clause)
        for readings in by_word(terms):
            key = tuple(sorted((t.kind, t.value, t.negated) for t in readings))
            if key in seen:
                continue
            seen.add(key)
            t = readings[0]
            start = t.start
            if t.negated:
                start = next((i for i in range(t.start - 1, max(-1, t.start - 4), -1) if toks[i] in NEGATIONS), t.start)
            quote = " ".join(toks[start : t.start + len(t.phrase.split())])
            out.append(RequestTerm(t, quote, readings))
    return tuple(out)


def gather_evidence(request: str, product: Product, score: float | None = None,
                    history: list[Product] | None = None, values: dict[str, set[str]] | None = None) -> Evidence:
    """Sort the request's terms by what the item's facts say, and find what the item shares with
    the shopper's purchases (at most three, most shared first). `values`: the item's
    `item_values` when the caller has them already."""
    values = item_values(product) if values is None else values
    ev = Evidence(request=request, facts={k: sorted(v) for k, v in values.items() if v}, score=score)
    for rt in request_terms(request or ""):
        rt.term, v = judge(rt.readings, values)
        (ev.unknown if v is None else ev.matched if v else ev.unmet).append(rt)
    links = []
    for h in history or []:
        if h.id == product.id:
            continue
        hv = item_values(h)
        common = {k: sorted((values[k] & hv[k]) - {"solid"}) for k in ("product_type", "colour", "pattern", "material")}
        shared = [(k, v[0]) for k, v in common.items() if v]
        if shared:
            links.append(HistoryLink(h.id, h.title, shared))
    links.sort(key=lambda link: -len(link.shared))
    ev.history = links[:3]
    return ev


def _item_value(view: ItemView, term: Term) -> str | None:
    """The item's own value that makes a term true (the more specific one: 'dark blue' for 'blue')."""
    have = view.values.get(term.kind) or set()
    hit = sorted(have & accepts(term.kind, term.value))
    if hit and not term.negated:
        return hit[0]
    for group in OPEN_GROUPS.get(term.kind, []):  # "not baggy" is answered by the cut, not the rise
        if term.value in group and have & group:
            return sorted(have & group)[0]
    return view.first(term.kind)


def _state(view: ItemView, kind: str, value: str | None = None, subject: str | None = None) -> str:
    """'it is black', 'it is a dress', 'it has a slim fit', 'it is from the sport range'
    (`subject` instead of it/they: 'this dress is black')."""
    it, is_ = subject or view.it, view.is_
    has = "have" if view.plural else "has"
    word = view.say(kind, value)
    if kind == "product_type":
        return f"{it} {is_} {word if view.plural else article(word)}"
    if kind == "fit":
        return f"{it} {has} a {word}"
    if kind == "department":
        return f"{it} {is_} from the {word} range"
    if kind == "material":
        return f"{it} {is_} made of {word}"
    return f"{it} {is_} {word}"


def _not_state(view: ItemView, term: Term) -> str:
    """A satisfied negated request term: 'it is dark blue, not black'."""
    actual = _item_value(view, term)
    neg = view.say(term.kind, term.value)
    if actual is None:
        return ""
    if term.kind == "fit":
        return f"{_state(view, 'fit', actual)}, not a {neg}"
    if term.kind == "department":
        return f"{_state(view, 'department', actual)}, not the {neg} range"
    if term.kind == "product_type":
        return f"{_state(view, 'product_type', actual)}, not {neg if neg.endswith('s') else article(neg)}"
    return f"{_state(view, term.kind, actual)}, not {neg}"


def _core(view: ItemView, matched: list[Term]) -> str:
    """One clause for the matched positive terms: 'it is a black striped t-shirt from the men's range'."""
    kinds = {t.kind for t in matched if not t.negated}
    if not kinds:
        return ""
    adj = [view.say(k, _item_value(view, next(t for t in matched if t.kind == k and not t.negated)))
           for k in ("colour", "pattern", "material") if k in kinds]
    parts = []
    if "product_type" in kinds:
        noun = " ".join(adj + [view.type_word])
        parts.append(f"{view.it} {view.is_} {noun if view.plural else article(noun)}")
    elif adj:
        parts.append(f"{view.it} {view.is_} {join(adj)}")
    if "department" in kinds:
        dept = next(t for t in matched if t.kind == "department" and not t.negated)
        word = view.say("department", _item_value(view, dept))
        parts.append(f"from the {word} range" if parts else _state(view, "department", _item_value(view, dept)))
    if "fit" in kinds:
        fit = next(t for t in matched if t.kind == "fit" and not t.negated)
        word = view.say("fit", _item_value(view, fit))
        parts.append(f"with a {word}" if parts else _state(view, "fit", _item_value(view, fit)))
    return " ".join(parts)


def _unmet_sentence(bank: Bank, view: ItemView, rt: RequestTerm) -> str:
    t = rt.term
    actual = view.first(t.kind)
    state = _state(view, t.kind, actual) if actual else ""
    if t.negated:
        return bank.pick(['You asked for "{q}", but {s}.', 'It does not meet "{q}": {s}.',
                          'On "{q}" it falls short: {s}.'], q=rt.quote, s=state)
    return bank.pick(['You asked for "{q}", but {s}.', 'It does not match "{q}": {s}.',
                      'The catalog lists something else for "{q}": {s}.', 'Where you asked for "{q}", {s}.',
                      'On "{q}" it falls short: {s}.'], q=rt.quote, s=state)


def _unknown_sentence(bank: Bank, rt: RequestTerm) -> str:
    return bank.pick(['The catalog does not say anything about "{q}".', 'I cannot confirm "{q}" from the catalog.',
                      'Whether it meets "{q}", the catalog does not say.', 'The catalog is silent on "{q}".'], q=rt.quote)


def compose_rationale(bank: Bank, view: ItemView, ev: Evidence, extras: int = 0) -> tuple[str, list[str]]:
    """Sentences for a rationale from evidence only, and the facts they use ('colour: black')."""
    used: list[str] = []
    sentences: list[str] = []
    matched = [r.term for r in ev.matched]
    positive = [t for t in matched if not t.negated]
    negative = [t for t in matched if t.negated]
    for t in positive:
        used.append(f"{t.kind}: {_item_value(view, t)}")
    core = _core(view, positive)
    if core and not ev.unmet:
        opts = ["This matches your request: {c}.", "It fits what you asked for: {c}.", "{C}, which is what you asked for.",
                "Yes, this one works: {c}.", "{C}, so {it} {matches} your request.", "A good match: {c}.",
                "{C}, just as you asked.", "This is what you are looking for: {c}.", "Good news: {c}.",
                "{C}, exactly what you described.", "It ticks the boxes: {c}."]
        sentences.append(bank.item(view, opts, c=core, C=cap(core)))
    elif core:
        sentences.append(bank.item(view, ["{This} only partly fits your request: {c}.", "Part of it matches: {c}.",
                                          "This is a partial match: {c}.", "{C}, as you asked, but not everything fits.",
                                          "Some of it fits: {c}.", "{C}, which is a start, but there is a catch."],
                                   c=core, C=cap(core)))
    elif ev.unmet:
        sentences.append(bank.item(view, ["This does not really fit your request.", "{This} {is} not a close match for your request.",
                                          "It misses what you asked for.", "{This} {is} not what you described."]))
    for t in negative:
        s = _not_state(view, t)
        if s:
            sentences.append(cap(s) + ".")
            used.append(f"{t.kind}: {_item_value(view, t)}")
    for rt in ev.unmet:
        sentences.append(_unmet_sentence(bank, view, rt))
        if view.first(rt.term.kind):
            used.append(f"{rt.term.kind}: {view.first(rt.term.kind)}")
    for rt in ev.unknown:
        sentences.append(_unknown_sentence(bank, rt))
    if not matched and not ev.unmet:
        noun = view.noun()
        dept = view.first("department")
        tail = f" from the {view.say('department', dept)} range" if dept and dept != "sport" else ""
        sentences.append(bank.pick(["The catalog lists it as {n}{t}.", "It is {n}{t}.", "According to the catalog, it is {n}{t}."],
                                   n=noun, t=tail))
        used += [f"{k}: {view.first(k)}" for k in ("colour", "pattern", "product_type") if view.has(k)]
        if dept and tail:
            used.append(f"department: {dept}")
    # facts the shopper did not ask about, for variety in generated data
    spoken = {u.split(":")[0] for u in used}
    unspoken = [k for k in ("material", "fit", "pattern") if view.has(k) and k not in spoken]
    for kind in bank.rng.sample(unspoken, k=min(max(extras, 0), len(unspoken))):
        if kind == "pattern" and view.first("pattern") == "solid":
            sentences.append(plain_sentence(bank, view))
        else:
            s = _state(view, kind)
            s_this = _state(view, kind, subject=view.this)
            sentences.append(bank.item(view, ["{S}.", "The catalog also says {t}.", "Also, {t}.", "As for {k}, {s}.",
                                              "One more detail from the catalog: {t}.", "Worth knowing: {t}.", "{T}."],
                                       s=s, S=cap(s), t=s_this, T=cap(s_this), k=KIND_WORDS[kind]))
        used.append(f"{kind}: {view.first(kind)}")
    for link in ev.history[:2]:
        kind, value = link.shared[0]
        state = _state(view, kind, value)
        title = link.title.replace('"', "'")
        sentences.append(bank.pick(['Like "{t}", which you bought before, {s}.', '{S}, like "{t}" from your earlier purchases.',
                                    'It has something in common with "{t}" that you bought: {s}.'], t=title, s=state, S=cap(state)))
        used.append(f"history: {link.item_id} shares {kind} {value}")
    if ev.unmet:
        sentences.append(bank.item(view, [
            "So {this} {is} probably not the one you want.", "You may want to look at other options than {this}.",
            "It is worth a look only if {k} matters less to you.", "Keep that in mind before choosing {this}.",
            "I would keep looking if {k} is important to you.", "If {k} is a must, {this} {is} not the right pick.",
            "Consider {this} only if you are flexible on {k}.", "Other results may fit better than {this}."],
            k=KIND_WORDS.get(ev.unmet[0].term.kind, "that")))
    return " ".join(s for s in sentences if s), used


def plain_sentence(bank: Bank, view: ItemView) -> str:
    """A sentence for a solid-colour item."""
    return bank.item(view, ["{It} {is} plain, with no pattern.", "The catalog lists {this} as plain.",
                            "There is no pattern: {this} {is} plain.", "{This} {is} plain, without a print.",
                            "The catalog calls {this} plain."])


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


class Explainer(Protocol):
    def explain(self, request: str, product: Product, evidence: Evidence | None = None) -> Rationale: ...


MAX_UNVERIFIED = 0  # attribute claims the catalog does not back that a served text may make


def vet(text: str, request: str, product: Product, evidence: Evidence,
        max_unverified: int = MAX_UNVERIFIED) -> tuple[GroundingResult, str | None]:
    """The grounding result of a text, and why it may not be served (None: it may)."""
    result = check(text, product, request=request, sources=[h.title for h in evidence.history])
    if not text.strip():
        return result, "empty output"
    if result.contradicted:
        return result, "grounding: " + "; ".join(result.reasons())
    ranked = score_claims(text)
    if ranked:
        return result, "score or rank in the text: " + "; ".join(repr(r) for r in ranked)
    if len(result.not_stated) > max_unverified:
        return result, "unverified: " + "; ".join(f"{t.kind} {t.value!r} ({t.phrase!r}) is not in the catalog's facts"
                                                  for t in result.not_stated)
    return result, None


def plain_rationale(product: Product) -> Rationale:
    """The last resort: what the catalog calls the item, in its own values."""
    view = ItemView(product)
    return Rationale(text=f"The catalog lists it as {view.noun()}.", backend="grounded",
                     facts_used=[f"{k}: {view.first(k)}" for k in ("colour", "pattern", "product_type") if view.has(k)])


def settle(candidate: Rationale | BaseException, request: str, product: Product, evidence: Evidence,
           fallback: "Explainer | None" = None, max_unverified: int = MAX_UNVERIFIED) -> Rationale:
    """The one check-and-fallback path. Serve `candidate` if its text keeps the promise (see the
    module doc); otherwise the `fallback` explainer's text (checked the same way), otherwise
    `plain_rationale`. A replaced text always carries `fallback_reason`."""
    if isinstance(candidate, BaseException):
        reason = f"error: {type(candidate).__name__}: {candidate}"
    else:
        result, reason = vet(candidate.text, request, product, evidence, max_unverified)
        if reason is None:
            candidate.unverified = [f"{t.kind}: {t.value}" for t in result.not_stated]
            candidate.facts_used = candidate.facts_used or [f"{t.kind}: {t.value}" for t in result.supported]
            return candidate
    log.debug("rationale for %s replaced: %s", product.id, reason)  # the reason travels in the response (fallback_reason)
    if fallback is not None:
        try:
            # the template's own text unchecked, so that it is checked once, here (its `explain` settles too)
            out = (fallback.compose(request, product, evidence) if isinstance(fallback, GroundedExplainer)
                   else fallback.explain(request, product, evidence))
            why = vet(out.text, request, product, evidence, max_unverified)[1]
        except Exception as err:  # noqa: BLE001 - the plain sentence below still answers
            why = f"error: {type(err).__name__}: {err}"
        if why is None:
            out.fallback_reason = reason if not out.fallback_reason else f"{reason}; then {out.fallback_reason}"
            return out
        reason = f"{reason}; fallback {getattr(fallback, 'backend', type(fallback).__name__)} failed too ({why})"
    out = plain_rationale(product)
    out.fallback_reason = reason
    return out


class GroundedExplainer:
    """Template explanations from verified evidence only; wording is fixed per (request, item).
    Its text goes through `settle` like any model's (a wording bug falls back to the plain
    catalog sentence, with the reason)."""

    backend = "grounded"

    def __init__(self, extras: int = 0):
        self.extras = extras

    def compose(self, request: str, product: Product, evidence: Evidence, rng: random.Random | None = None) -> Rationale:
        """The template's text, unchecked."""
        view = ItemView(product)
        bank = Bank(rng or random.Random(_seed(request, product.id)))
        text, used = compose_rationale(bank, view, evidence, extras=self.extras)
        return Rationale(text=text, facts_used=used, backend=self.backend)

    def explain(self, request: str, product: Product, evidence: Evidence | None = None,
                rng: random.Random | None = None) -> Rationale:
        evidence = evidence or gather_evidence(request, product)
        return settle(self.compose(request, product, evidence, rng), request, product, evidence)


def checked_explain(explainer: Explainer, request: str, product: Product, evidence: Evidence | None = None,
                    fallback: Explainer | None = None, max_unverified: int = MAX_UNVERIFIED) -> Rationale:
    """Run any explainer and `settle` its text, with the grounded explainer as the fallback (an
    explainer that raises falls back too, with the error as the reason)."""
    evidence = evidence or gather_evidence(request, product)
    if fallback is None and not isinstance(explainer, GroundedExplainer):
        fallback = GroundedExplainer()
    try:
        candidate: Rationale | BaseException = explainer.explain(request, product, evidence)
    except Exception as err:  # a model that cannot answer must not take the response down
        log.warning("explainer %s failed: %s", type(explainer).__name__, err)
        candidate = err
    if isinstance(candidate, Rationale) and candidate.fallback_reason:
        return candidate  # the explainer settled its own text already (and fell back, saying why)
    return settle(candidate, request, product, evidence, fallback, max_unverified)


EXPLAINERS: dict[str, Callable[..., Explainer]] = {"grounded": GroundedExplainer}


def register_explainer(name: str, factory: Callable[..., Explainer]) -> None:
    """Let a higher layer (llava_tuning) add its explainer under a name."""
    EXPLAINERS[name] = factory


def get_explainer(name: str = "grounded", **kwargs) -> Explainer:
    if name not in EXPLAINERS:
        raise ValueError(f"unknown explainer backend {name!r}; known: {sorted(EXPLAINERS)}")
    return EXPLAINERS[name](**kwargs)
