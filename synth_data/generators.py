"""Answer writers behind one interface: `template` (offline, deterministic) and `openai` (any
OpenAI-compatible endpoint, see `synth_data.openai_backend`).

A generator takes planned `Task`s and returns one `Answer` per task: the text, or the reason there
is none (a malformed model reply, a failed request). The template generator builds every sentence
from facts verified through the vocabulary, with several wordings per sentence; it never copies
catalog prose into an answer, so text hidden in a description cannot change what it writes.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Callable, Protocol

from retrieval.vocabulary import extract_terms
from synth_data.details import description_details, detail_answer, request_details
from synth_data.explain import _state, compose_rationale, gather_evidence, plain_sentence
from synth_data.grounding import verdict
from synth_data.phrasing import Bank, ItemView, cap, join
from synth_data.tasks import Task


@dataclass
class Answer:
    text: str | None
    error: str | None = None  # "malformed: ...", "request failed: ..."
    usage: dict = field(default_factory=dict)
    cached: bool = False


class Generator(Protocol):
    name: str

    def answer_many(self, tasks: list[Task]) -> list[Answer]: ...

    def stats(self) -> dict: ...


def task_seed(seed: int, task: Task, index: int) -> int:
    key = f"{seed}\x1f{index}\x1f{task.kind}\x1f{','.join(p.id for p in task.items)}\x1f{task.words}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


# ----- template answers -----
def _asked_term(task: Task, kind: str):
    return next((t for t in extract_terms(task.question or "") if t.kind == kind), None)


def _list_values(v: ItemView, kind: str) -> str:
    vals = sorted(v.values.get(kind) or ())
    if kind == "fit" and "regular" in vals and {"slim", "loose"} & set(vals):
        vals.remove("regular")  # "regular waist" in a bodycon dress's description is not its cut
    return join([v.say(kind, x) for x in vals])


def _colour_answer(b: Bank, v: ItemView, task: Task) -> str:
    if not v.has("colour"):
        return b.pick(["The catalog does not say what colour it is.", "The catalog gives no colour for it."])
    c = v.say("colour")
    if task.meta.get("asked"):
        term = _asked_term(task, "colour")
        res = verdict(term, v.values) if term else None
        if res is True:
            return b.item(v, ["Yes, {it} {is} {c}.", "Yes: the catalog lists {them} as {c}.", "Yes, {c}."], c=c)
        if res is False:
            return b.item(v, ["No, {it} {is} {c}, not {x}.", "No, the catalog lists {them} as {c}, not {x}.",
                              "Not quite: {it} {is} {c}, not {x}."], c=c, x=term.phrase)
        x = term.phrase if term else task.meta["asked"]
        return b.item(v, ['The catalog only says {c}; it does not say whether {it} {is} "{x}".',
                          'The catalog lists the colour as {c} and does not settle "{x}".'], c=c, x=x)
    return b.item(v, ["{It} {is} {c}.", "The catalog lists the colour as {c}.", "{C}.", "This one is {c}.",
                      "The colour is {c}.", "{This} {is} {c}.", "The catalog says {c} for {this}."], c=c, C=cap(c))


def _material_answer(b: Bank, v: ItemView, task: Task) -> str:
    m = _list_values(v, "material")
    if task.meta.get("asked"):
        term = _asked_term(task, "material")
        res = verdict(term, v.values) if term else None
        x = term.phrase if term else task.meta["asked"]
        if res is True:
            return b.item(v, ["Yes, the catalog mentions {m}.", "Yes: {it} {is} made of {m}."], m=m)
        if res is False:
            return b.item(v, ["No, the catalog mentions {m}, not {x}.", "No, {it} {is} made of {m}, not {x}."], m=m, x=x)
        if v.has("material"):
            return b.item(v, ['The catalog mentions {m}; it does not say whether {it} {is} "{x}".'], m=m, x=x)
        return b.item(v, ['The catalog does not say what {it} {is} made of, so I cannot confirm "{x}".',
                          'The catalog gives no material, so I cannot say whether {it} {is} "{x}".'], x=x)
    if not v.has("material"):
        return b.item(v, ["The catalog does not say what {it} {is} made of.", "The catalog gives no material for {them}.",
                          "I cannot tell from the catalog: it does not name the fabric.",
                          "The catalog does not say what {this} {is} made of."])
    return b.item(v, ["The catalog mentions {m}.", "{It} {is} made of {m}.", "According to the description: {m}.",
                      "The fabric is {m}, according to the catalog.", "{This} {is} made of {m}.",
                      "The catalog describes {this} as {m}."], m=m)


def _fit_answer(b: Bank, v: ItemView, task: Task) -> str:
    f = _list_values(v, "fit")
    if task.meta.get("asked"):
        term = _asked_term(task, "fit")
        res = verdict(term, v.values) if term else None
        x = term.phrase if term else task.meta["asked"]
        if res is True:
            return b.item(v, ["Yes, {it} {has} a {f}.", "Yes: the catalog describes a {f}."], f=f)
        if res is False:
            return b.item(v, ["No, {it} {has} a {f}.", "No, the catalog describes a {f}, not {x}."], f=f, x=x)
        return b.item(v, ['The catalog does not say whether {it} {is} "{x}".', 'I cannot confirm "{x}" from the catalog.'], x=x)
    if not v.has("fit"):
        return b.item(v, ["The catalog does not say how {it} {fits}.", "The catalog gives no fit for {them}.",
                          "That is not in the catalog: it does not describe the cut.",
                          "The catalog does not describe the cut of {this}."])
    return b.item(v, ["{It} {has} a {f}.", "The catalog describes a {f}.", "According to the catalog: {f}.",
                      "{This} {has} a {f}.", "The catalog gives {this} a {f}."], f=f)


def _occasion_answer(b: Bank, v: ItemView, task: Task) -> str:
    occ = task.meta.get("occasion", "free")
    n = v.noun()
    if occ == "sport":
        if "sport" in v.values["department"]:
            return b.item(v, ["Yes, {it} {is} from the sport range.", "Yes: the catalog lists {them} in the sport range.",
                              "It should: {it} {is} from the sport range."])
        if not v.has("department"):
            return "The catalog does not say which range it is from."
        d = v.say("department", v.first("department"))
        return b.item(v, ["{It} {is} not from the sport range; the catalog lists {them} as {n} from the {d} range.",
                          "The catalog does not call it sportswear: {it} {is} from the {d} range.",
                          "{It} {is} not from the sport range, so the catalog does not say {it} {is} made for that."], n=n, d=d)
    if occ == "swim":
        swim = verdict(extract_terms("swimwear")[0], v.values)
        if swim is True:
            return b.item(v, ["Yes, {it} {is} swimwear: {n}.", "Yes: the catalog lists {n}, which is swimwear."], n=n)
        return b.item(v, ["{It} {is} not swimwear: the catalog lists {n}.", "The catalog lists {n}, not swimwear."], n=n)
    return b.item(v, ["The catalog does not say whether {this} {suits} that. It only says {it} {is} {n}.",
                      "I cannot tell from the catalog; it lists {n} and says nothing about occasions.",
                      "The catalog does not say. What it does say: {n}."], n=n)


def _quoted_fact(v: ItemView, keys) -> str | None:
    facts = v.facts
    key = next((k for k in keys if str(facts.get(k, "")).strip()), None)
    return f'The catalog says: "{facts[key]}".' if key else None


def _care_answer(b: Bank, v: ItemView, task: Task) -> str:
    return _quoted_fact(v, ("care", "care_instructions", "washing", "wash")) or b.item(v, [
        "The catalog does not give care instructions.", "The catalog does not say how to wash or care for {them}.",
        "There are no care instructions in the catalog, so I cannot say.", "The catalog does not say how to care for {this}.",
        "The catalog has no care instructions for {this}.", "I cannot tell: the catalog gives no washing instructions for {this}."])


def _unanswerable_answer(b: Bank, v: ItemView, task: Task) -> str:
    return _quoted_fact(v, task.meta.get("keys", [])) or b.item(v, [
        "The catalog does not say {t}.", "I cannot tell {t} from the catalog.",
        "That is not in the catalog: it does not say {t}.", "The catalog does not say {t} for {this}.",
        "For {this}, the catalog does not say {t}."], t=task.meta.get("topic", "that"))


def _picture_answer(b: Bank, v: ItemView, task: Task) -> str:
    n = v.noun()
    return b.pick(["The picture shows {n}.", "It shows {n}.", "A photo of {n}.", "This is {n}.", "{N}."], n=n, N=cap(n))


def human_description(product) -> str | None:
    """Describe-from-picture's target: the catalog's own human-written description, kept clause by
    clause where the grounding checker finds nothing wrong (None when no clause is left)."""
    by_sentence: dict[int, list] = {}
    for d in description_details(product):
        by_sentence.setdefault(d.sentence, []).append(d)
    out = []
    for n in sorted(by_sentence):
        whole = [d for d in by_sentence[n] if d.whole]
        out.append(cap(whole[0].text) if whole else cap(", ".join(d.text for d in by_sentence[n])))
    return " ".join(s + "." for s in out) or None


DETAIL_LEADS = ["From the description: {d}.", "The description mentions {d}.", "Good to know: {d}.",
                "The catalog adds: {d}.", "One detail: {d}.", "A detail from the description: {d}."]


def _detail_sentences(b: Bank, details: list[str]) -> list[str]:
    leads = list(DETAIL_LEADS)
    b.rng.shuffle(leads)
    return [lead.format(d=d) for lead, d in zip(leads, details)]


def request_rationale(b: Bank, task: Task, extras: int = 0) -> str:
    """The honest fit and misfit facts (the grounded template), plus the one or two description
    details that matter for the request when the prompt shows the description. No scores, no ranks."""
    view = ItemView(task.item)
    ev = gather_evidence(task.request or "", task.item)
    text, _ = compose_rationale(b, view, ev, extras=extras)
    if "description" in task.withhold:
        return text
    named = {w for rt in ev.matched + ev.unmet + ev.unknown for w in rt.quote.lower().split()}
    details = request_details(task.item, task.request or "", named, k=1 if ev.unmet else 2)
    if not details:
        return text
    sentences = _detail_sentences(b, details)
    if ev.unmet:  # the misfit verdict stays last: the detail goes before the closing advice
        head, sep, last = text.rpartition(". ")
        return " ".join([head + ".", *sentences, last]) if sep else " ".join([text, *sentences])
    return " ".join([text, *sentences])


def _detail_answer(b: Bank, v: ItemView, task: Task) -> str:
    found = detail_answer(task.item, tuple(task.meta.get("cues", ())))
    topic = task.meta.get("topic", "that")
    if found and "description" not in task.withhold:
        return b.pick(["The description mentions {d}.", "According to the description: {d}.", "From the description: {d}.",
                       "{D}, according to the catalog."], d=found, D=cap(found))
    return b.item(v, ["The description does not mention {t}.", "The catalog does not say anything about {t}.",
                      "I cannot tell from the catalog: its description does not mention {t}."], t=topic)


def _description(b: Bank, v: ItemView, task: Task) -> str:
    if set(task.withhold) >= {"title", "description", "attributes"}:
        human = human_description(task.item)
        if human:
            return human
    n = v.noun()
    dept = v.first("department")
    t = f" from the {v.say('department', dept)} range" if dept else ""
    sentences = [b.pick(["The picture shows {n}{t}.", "This is {n}{t}.", "{N}{t}.", "It is {n}{t}."], n=n, N=cap(n), t=t)]
    extra = [k for k in ("material", "fit") if v.has(k)]
    b.rng.shuffle(extra)
    for kind in extra:
        if kind == "material":
            sentences.append(b.item(v, ["The catalog mentions {m}.", "{It} {is} made of {m}.", "The fabric: {m}.",
                                        "{This} {is} made of {m}.", "The catalog describes {this} as {m}."],
                                    m=_list_values(v, "material")))
        else:
            sentences.append(b.item(v, ["{It} {has} a {f}.", "The catalog describes a {f}.", "{This} {has} a {f}.",
                                        "The cut: {f}."], f=_list_values(v, "fit")))
    if v.first("pattern") == "solid" and b.rng.random() < 0.5:
        sentences.append(plain_sentence(b, v))
    return " ".join(sentences)


def _comparison(b: Bank, task: Task) -> str:
    a, bb = (ItemView(p) for p in task.items)
    ev = [gather_evidence(task.request or "", p) for p in task.items]
    sentences = [b.pick(["Item A is {na}; Item B is {nb}.", "Item A: {na}. Item B: {nb}.", "On the left, Item A is {na}; on the right, Item B is {nb}."],
                        na=a.noun(), nb=bb.noun())]
    scores = [len(e.matched) - 2 * len(e.unmet) for e in ev]
    for label, view, e in (("A", a, ev[0]), ("B", bb, ev[1])):
        for rt in e.unmet[:2]:
            actual = view.first(rt.term.kind)
            if actual:
                sentences.append(b.pick(['Item {l} does not match "{q}": {s}.', 'For "{q}", Item {l} falls short: {s}.'],
                                        l=label, q=rt.quote, s=_state(view, rt.term.kind, actual)))
        ok = [r for r in e.matched if not r.term.negated][:2]
        if ok and not e.unmet:
            sentences.append(b.pick(['Item {l} matches {q}.', 'Item {l} has what you asked for: {q}.'],
                                    l=label, q=join([f'"{r.quote}"' for r in ok])))
    if scores[0] == scores[1]:
        sentences.append(b.pick(["Both fit your request about equally well.", "On the catalog facts, neither is clearly better.",
                                 "Both are about as close to your request.", "It is a tie on the catalog facts."]))
    else:
        best = "A" if scores[0] > scores[1] else "B"
        best_view, worse_ev = (a, ev[1]) if best == "A" else (bb, ev[0])
        kind = worse_ev.unmet[0].term.kind if worse_ev.unmet else None
        reason = _state(best_view, kind) if kind and best_view.has(kind) else ""
        if reason:
            sentences.append(b.pick(["Item {l} fits your request better: {r}.", "I would pick Item {l}, since {r}.",
                                     "Item {l} is the better match: {r}.", "Go for Item {l}: {r}."], l=best, r=reason))
        else:
            sentences.append(b.pick(["Item {l} fits your request better.", "I would pick Item {l}.",
                                     "Item {l} is the better match."], l=best))
    return " ".join(sentences)


QUESTION_ANSWERS: dict[str, Callable[[Bank, ItemView, Task], str]] = {
    "colour": _colour_answer, "material": _material_answer, "fit": _fit_answer, "occasion": _occasion_answer,
    "care": _care_answer, "picture": _picture_answer, "unanswerable": _unanswerable_answer, "detail": _detail_answer,
}


def template_answer(task: Task, rng: random.Random) -> str:
    """The template generator's answer to one task."""
    bank = Bank(rng)
    if task.kind == "rationale":
        return request_rationale(bank, task, extras=rng.choice([0, 0, 1]))
    if task.kind == "question":
        return QUESTION_ANSWERS[task.qtype or "picture"](bank, ItemView(task.item), task)
    if task.kind == "description":
        return _description(bank, ItemView(task.item), task)
    if task.kind == "comparison":
        return _comparison(bank, task)
    raise ValueError(f"unknown task kind {task.kind!r}")


class TemplateGenerator:
    """Deterministic for a given seed: the same tasks get the same answers."""

    name = "template"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._count = 0

    def answer_many(self, tasks: list[Task]) -> list[Answer]:
        out = []
        for task in tasks:
            rng = random.Random(task_seed(self.seed, task, self._count))
            self._count += 1
            out.append(Answer(template_answer(task, rng)))
        return out

    def stats(self) -> dict:
        return {"answers": self._count}


GENERATORS: dict[str, Callable[..., Generator]] = {}


def get_generator(name: str, **kwargs) -> Generator:
    """A generator by name: 'template' or 'openai' (kwargs go to its constructor)."""
    if name == "template":
        return TemplateGenerator(seed=kwargs.get("seed", 0))
    if name == "openai":
        from synth_data.openai_backend import OpenAIGenerator  # the client is only needed here

        return OpenAIGenerator(kwargs["config"])
    if name in GENERATORS:
        return GENERATORS[name](**kwargs)
    raise ValueError(f"unknown generator backend {name!r}; known: template, openai{''.join(', ' + n for n in GENERATORS)}")
