"""Chat-style product questions behind the OpenAI chat-completions protocol.

Two kinds of turn:
- a question about one product (named by id, or "this one" / "the second one" pointing at a
  product the previous answer named, or one a system message names): answered only from that
  product's catalog facts through the shared vocabulary, or "the catalog does not say";
- anything else is a shopping request: retrieve (personalised when `user` is a known shopper, by
  photo when the message carries a data: image) and name the products, each with its rationale.
Nothing here is sampled, so the answer never states a fact the catalog does not back.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from retrieval.vocabulary import item_values
from synth_data.grounding import claims, judge

from api.deps import Engine
from api.schemas import QUERY_MAX, ChatMessage
from api.service import histories, like_request, rationale
from api.settings import Settings
from api.uploads import UploadError, decode_image

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.]{2,63}")
DEICTIC_RE = re.compile(r"\b(this|that|it|its|it's|this one|that one|the (first|second|third|fourth|fifth|last) one|"
                        r"the (first|second|third|fourth|fifth|last)|number \d+|#\d+|option \d+)\b", re.I)
ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5}
SIMILAR_RE = re.compile(r"\b(similar|alike|like (this|that|it)|alternatives?|other colou?rs?|something else like)\b", re.I)
STOP = set("""a an the is it its it's this that one be are was were do does did can could would should will of for to in on
with and or but about me my i you your what which who how much many any some tell please there have has item product
made does really also very more than them they out at as by from not no yes if so first second third fourth fifth last
number option""".split())

# question words -> the facts that answer them (first present wins)
FIELD_QUESTIONS: list[tuple[re.Pattern, str, tuple[str, ...]]] = [
    (re.compile(r"\bwhat (colou?r|shade)|\bwhich colou?r|\bcolou?r is\b", re.I), "colour", ("colour", "colour_master")),
    (re.compile(r"\b(price|cost|how much|expensive|cheap)\b", re.I), "price", ("price",)),
    (re.compile(r"\b(material|fabric|made of|made from|composition)\b", re.I), "material", ("material", "composition", "fabric")),
    (re.compile(r"\bpattern|print\b", re.I), "pattern", ("pattern",)),
    (re.compile(r"\b(what (kind|type)|what is it|what's it)\b", re.I), "product type", ("product_type", "category")),
    (re.compile(r"\b(department|for (men|women|kids|children|whom)|who is it for)\b", re.I), "department",
     ("department", "index_group", "section")),
    (re.compile(r"\bsizes?\b", re.I), "size", ("size", "sizes")),
    (re.compile(r"\b(fit|cut)\b", re.I), "fit", ("fit",)),
    (re.compile(r"\b(brand|made by)\b", re.I), "brand", ("brand",)),
]


HELP = ("Tell me what you are looking for (\"a navy striped shirt\", \"black ankle boots for women\") and I will name "
        "products from the catalog and say why each fits; then ask about any of them (\"is the first one machine-washable?\").")


@dataclass
class ChatAnswer:
    text: str
    kind: str  # product_question | search | recommend | image_search | similar
    products: list[str] = field(default_factory=list)
    grounding: dict[str, Any] = field(default_factory=dict)


def answer(engine: Engine, settings: Settings, messages: Sequence[ChatMessage], user: str | None = None) -> ChatAnswer:
    last = next((m for m in reversed(messages) if m.role == "user" and m.text().strip()), None)
    if last is None:
        return ChatAnswer(HELP, "help")
    question = last.text().strip()[:QUERY_MAX]
    image = _data_image(last, settings)
    if image is not None:
        return _image_search(engine, settings, image, question)
    target = _target_product(engine, messages, last, question)
    if target is not None:
        if SIMILAR_RE.search(question):
            return _similar(engine, settings, target)
        return answer_about(engine.catalog.by_id[target], question)
    history = histories(engine).get(user or "", [])[-settings.history_used:]
    return _search(engine, settings, question, history)


# ----- which product a turn is about -----
def _ids_in(engine: Engine, text: str) -> list[str]:
    seen: list[str] = []
    for tok in ID_RE.findall(text or ""):
        if tok in engine.catalog.by_id and tok not in seen:
            seen.append(tok)
    return seen


def _target_product(engine: Engine, messages: Sequence[ChatMessage], last: ChatMessage, question: str) -> str | None:
    named = _ids_in(engine, question)
    if named:
        return named[0]
    if not DEICTIC_RE.search(question):
        return None
    at = max(i for i, m in enumerate(messages) if m is last)
    for m in reversed(messages[:at]):  # the products the latest answer (or a system note) named
        ids = _ids_in(engine, m.text())
        if ids and m.role in ("assistant", "system", "developer"):
            return ids[min(_ordinal(question), len(ids)) - 1]
    return None


def _ordinal(question: str) -> int:
    q = question.lower()
    m = re.search(r"(?:number|#|option)\s*(\d+)", q)
    if m:
        return max(1, int(m.group(1)))
    for word, n in ORDINALS.items():
        if re.search(rf"\bthe {word}\b", q):
            return n
    return 1


# ----- questions about one product: facts or "the catalog does not say" -----
def answer_about(product, question: str) -> ChatAnswer:
    facts = {k: str(v) for k, v in product.facts().items() if str(v).strip()}
    name = f"{product.title} (item {product.id})"
    lines: list[str] = []
    used: list[str] = []
    asked: set[str] = set()
    values = item_values(product)
    terms = []
    for readings in claims(question):  # "is it black?", "is it a dress?", "is it not too tight?"
        term, verdict = judge(readings, values)  # the grounding checker's own verdict
        terms.append(term)
        kind = term.kind.replace("_", " ")
        asked.add(term.kind)
        stated = _kind_fact(facts, term.kind)
        if verdict is None:
            lines.append(f"The catalog does not say whether it is {term.phrase}: it states no {kind} for this item.")
        elif verdict:
            lines.append(f"Yes: the catalog gives its {kind} as {stated or ', '.join(sorted(values[term.kind]))}."
                         if not term.negated else f"Right, it is not {term.phrase}: its {kind} is {stated or ', '.join(sorted(values[term.kind]))}.")
            used.append(term.kind)
        else:
            shown = stated or ", ".join(sorted(values[term.kind]))
            lines.append(f"No: the catalog gives its {kind} as {shown}." if not term.negated else f"No, it is {term.phrase}: its {kind} is {shown}.")
            used.append(term.kind)
    for pattern, label, keys in FIELD_QUESTIONS:
        if not pattern.search(question) or label.replace(" ", "_") in asked or (label == "product type" and "product_type" in asked):
            continue
        if label == "colour" and "colour" in asked:
            continue
        value = next((facts[k] for k in keys if k in facts), None)
        if value is None:
            lines.append(f"The catalog does not say what {label} it has.")
        else:
            shown = f"{value}" if label != "price" else f"{value} (in the catalog's currency units)"
            lines.append(f"The catalog gives its {label} as {shown}.")
            used.append(next(k for k in keys if k in facts))
    if not lines:
        lines.append(_free_text_answer(product, facts, question, used))
    if re.search(r"\b(describe|tell me about|what is this|details|more about)\b", question, re.I) and product.description:
        lines.append(f"Its description reads: \"{product.description.strip()}\"")
        used.append("description")
    text = f"About {name}: " + " ".join(lines)
    return ChatAnswer(text, "product_question", [product.id], {"facts_used": sorted(set(used)), "terms": [t.phrase for t in terms]})


def _kind_fact(facts: dict[str, str], kind: str) -> str | None:
    keys = {"colour": ("colour",), "product_type": ("product_type",), "pattern": ("pattern",), "material": ("material",),
            "department": ("index_group", "department"), "fit": ("fit",)}.get(kind, (kind,))
    return next((facts[k] for k in keys if k in facts), None)


def _free_text_answer(product, facts: dict[str, str], question: str, used: list[str]) -> str:
    """Look the question's content words up in the item's own text; quote what is there, or say it is not."""
    words = [w for w in re.findall(r"[a-z][a-z\-]+", question.lower()) if w not in STOP and len(w) > 2]
    if not words:
        return "The catalog does not say; ask about its colour, type, pattern, department, price or description."
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", product.description or "") if s.strip()]
    sentences += [f"{k.replace('_', ' ')}: {v}" for k, v in facts.items()]
    stems = {w.rstrip("s")[:6] for w in words for w in w.split("-") if len(w) > 2 and w not in STOP}
    found = [s for s in sentences if any(st in s.lower() for st in stems)]
    subject = " ".join(words)
    if found:
        used.append("description")
        return "The catalog says: " + " ".join(f"\"{s}\"" for s in found[:2]) + f" It says nothing more about {subject}."
    return f"The catalog does not say anything about {subject} for this item."


# ----- shopping requests -----
def _listing(engine: Engine, settings: Settings, hits, request_text: str, intro: str, kind: str, history: Sequence[str] = ()) -> ChatAnswer:
    if not hits:
        return ChatAnswer("I found nothing in the catalog for that.", kind)
    lines = [intro]
    grounding = []
    for n, hit in enumerate(hits, 1):
        product = engine.catalog.by_id[hit.id]
        r, _ = rationale(engine, settings, request_text, product, float(hit.dense), history)
        lines.append(f"{n}. {product.title} (item {product.id}): {r.text}")
        grounding.append({"id": product.id, "facts_used": list(r.facts_used), "backend": r.backend, "score": float(hit.score)})
    lines.append("Ask me about any of them, e.g. \"is the first one black?\"")
    return ChatAnswer("\n".join(lines), kind, [h.id for h in hits], {"items": grounding})


def _search(engine: Engine, settings: Settings, question: str, history: list[str]) -> ChatAnswer:
    k = settings.chat_k
    if history:
        hits = engine.searcher.recommend(history, k, query=question)
        return _listing(engine, settings, hits, question, f"Based on your {len(history)} past purchases, these fit \"{question}\":",
                        "recommend", history)
    hits = engine.searcher.search(question, k, None)
    return _listing(engine, settings, hits, question, f"Here are {len(hits)} products from the catalog for \"{question}\":", "search")


def _similar(engine: Engine, settings: Settings, item_id: str) -> ChatAnswer:
    product = engine.catalog.by_id[item_id]
    hits = [h for h in engine.searcher.similar(item_id, settings.chat_k + 1) if h.id != item_id][: settings.chat_k]
    request_text = like_request(product)
    return _listing(engine, settings, hits, request_text, f"Products similar to {product.title} (item {item_id}):", "similar")


def _image_search(engine: Engine, settings: Settings, image, question: str) -> ChatAnswer:
    hits = engine.searcher.search_image(image, settings.chat_k, None)
    request_text = question or "items like the photo"
    return _listing(engine, settings, hits, request_text, "Products from the catalog that look like your photo:", "image_search")


def _data_image(message: ChatMessage, settings: Settings):
    """The first `data:image/...;base64,` image in a message (remote URLs are never fetched)."""
    if isinstance(message.content, str) or not message.content:
        return None
    for part in message.content:
        if part.type != "image_url" or part.image_url is None:
            continue
        url = part.image_url if isinstance(part.image_url, str) else str(part.image_url.get("url", ""))
        if not url.startswith("data:"):
            raise UploadError(415, "only data: image URLs are accepted; whyrec never fetches remote URLs")
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise UploadError(415, "image data URLs must be base64-encoded")
        if len(payload) * 3 // 4 > settings.max_upload_bytes:
            raise UploadError(413, f"image too large: limit is {settings.max_upload_bytes} bytes")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise UploadError(400, "the image data URL is not valid base64") from None
        return decode_image(data, settings.max_image_pixels)
    return None
