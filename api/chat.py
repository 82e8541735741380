"""A shopping assistant behind the OpenAI chat-completions protocol that follows the conversation.

OpenAI clients resend the whole history, so there is no server session: on every call the
conversation state (what the shopper is after: type, colour, pattern, material, department, fit,
price bounds, exclusions, context words, and the last list shown) is derived again by replaying
the user messages in order, each assistant message telling which products were shown. Every
user message is read once, through `read` (the one query reader), and routed from the state:

- a request names what to find (a new product type starts a new request, even if it says "them");
- a refinement changes the state ("in red", "not black", "cheaper", "under 20", "plain", "for men");
- a reference points at shown items ("more like the second one", "show more");
- a product question asks about one shown item; a comparison about several ("which is cheaper?").

Listings hold only products that meet every hard constraint of the state; when none does, the
answer says so and names the closest ones with the constraint it had to drop. This module holds
no retrieval: it calls the searcher's `search` / `recommend` / `search_image` and the explainers.
Every product named carries its id in the text ("(item ID)") and in the response's `whyrec` object.
"""
from __future__ import annotations

import base64
import binascii
import logging
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

from retrieval.query import Query, read_query
from retrieval.vocabulary import DEFAULT, Term, Vocabulary, item_values
from synth_data.grounding import claims, judge

from api.deps import Engine
from api.schemas import QUERY_MAX, ChatMessage
from api.service import rationale, shopper_items
from api.settings import Settings
from api.uploads import UploadError, decode_image

log = logging.getLogger(__name__)


def read(engine: Engine, text: str) -> Query:
    """The one door to the query reader: the searcher's own (catalog vocabulary) when it has one."""
    reader = getattr(engine.searcher, "read", None)
    return reader(text) if callable(reader) else read_query(text)


def vocab_of(engine: Engine) -> Vocabulary:
    """The vocabulary the searcher read the catalog with, so a term chat read matches the items it names."""
    return getattr(engine.searcher, "vocab", None) or DEFAULT


# ----------------------------------------------------------------------------- conversation words
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.]{2,63}")
ITEM_REF_RE = re.compile(r"\(item ([^)\s]+)\)")
LIST_LINE_RE = re.compile(r"^\s*\d+\.\s.*?\(item ([^)\s]+)\)", re.M)
ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4, "fifth": 5, "5th": 5,
            "sixth": 6, "6th": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10, "last": -1}
ORDINAL_RE = re.compile(r"\b(?:the\s+)?(" + "|".join(ORDINALS) + r")\b(?!\s+(?:time|of all|thing))|"
                        r"(?:number|no\.|#|option|item)\s*(\d{1,2})\b", re.I)
SINGLE_RE = re.compile(r"\b(it|its|it's|this|that|this one|that one|the one)\b", re.I)
PLURAL_RE = re.compile(r"\b(they|them|these|those|all of them|both|any of them|either|each)\b", re.I)
# a question that asks for products is a request ("do you have ...?"), not a question about one;
# the core phrases ask outright, the wider set also takes softer asks ("anything", "how about")
_REQUEST_CORE = (r"do you have|have you got|got any|are there|is there|can you (show|find|get)|could you (show|find|get)|"
                 r"can i (see|get)|show me|find me|i need|i want|i'd like|i would like|looking for|give me")
REQUEST_CORE_RE = re.compile(r"\b(" + _REQUEST_CORE + ")", re.I)
REQUEST_RE = re.compile(r"\b(" + _REQUEST_CORE + r"|i'm looking|im looking|i am looking|anything|something|any\b|recommend|suggest|"
                        r"how about|what about)", re.I)
REJECT_RE = re.compile(r"\b(don't|do not|didn't|did not|dont) (like|love|want|need)\b|\b(dislike|hate|not keen on|not that one)\b", re.I)
QUESTION_RE = re.compile(r"\?\s*$|^\s*(is|are|does|do|did|has|have|was|were|can|could|will|would|what|what's|whats|which|how|"
                         r"why|where|who|tell me|describe|explain)\b", re.I)
SIMILAR_RE = re.compile(r"\b(more like|similar|alike|like (this|that|it|these|those|them|the \w+( one)?|number \d+|#\d+)|"
                        r"(comes?|available|have (it|this|that|them|these)) in|same one in|in (another|other|a different) colou?r)\b", re.I)
MORE_RE = re.compile(r"\b(show (me )?more|more (please|options|of them|results|of those|of these)|any (more|others)|other ones|"
                     r"what else|next (ones|page|few)|see more|others\b|more$|some more)", re.I)
GOES_WITH_RE = re.compile(r"\b(to go|that (would |will |could )?go|goes|going|to wear|that (would |will )?match|to match|matching|"
                          r"to pair|pairs?|to combine|to style)\s+(well\s+)?(with|them|it)\b|\bwith (them|these|those|it|this|that)\b", re.I)
SAME_RE = re.compile(r"\b(same|also|too|as well|similar)\b", re.I)
CHEAPER_RE = re.compile(r"\b(cheaper|less expensive|lower price|lower-priced|more affordable|budget|cheapest|less pricey)\b", re.I)
DEARER_RE = re.compile(r"\b(more expensive|most expensive|pricier|priciest|dearer|dearest|higher[- ]end|more upmarket|premium)\b", re.I)
COMPARE_RE = re.compile(r"\b(which (one |ones |of (these|those|them|the two|the \w+)\s*)?(is|are|would|has|have|was|one)\b|"
                        r"which of (these|those|them)|compare|difference between|what's the difference|whats the difference|"
                        r"are (they|these|those|both|all)|do (they|these|those|both)|is either|are any|"
                        r"(the )?(cheapest|most expensive|priciest|dearest|warmest|softest)\b)", re.I)
RECOMMEND_RE = re.compile(r"\b(recommend|suggest|best|pick|choose|go for|favou?rite)\b", re.I)
THANKS_RE = re.compile(r"^\s*(thanks?( you)?|thank you( so much)?|cheers|great|perfect|ok(ay)?|nice|cool|bye|goodbye)\b[\s!.]*$", re.I)
GREETING_RE = re.compile(r"^\s*(hi|hello|hey|good (morning|afternoon|evening))( there)?\b[\s!.,]*$", re.I)
# conversational words that carry nothing for the encoder
NOISE = frozenset("""actually instead same but please thanks thank ok okay now also too else another other others different
ones one show see got go goes going wear match matching pair combine style would could maybe perhaps rather prefer then
cheaper cheapest expensive pricier dearer affordable budget price lower higher end premium upmarket similar alike like
more less well just still yes yeah hmm what about how let lets let's see try again new options option number first second
third fourth fifth last item items product products kind sort type available come comes colour color colours colors in
compare comparison difference differences between differ versus vs after version versions meant mean forget sorry
hi hello hey wait oh back recommend suggest keen dislike hate love i'd i'll i've i'm id ill ive we us our""".split())

KIND_ORDER = ("colour", "pattern", "material", "fit", "product_type", "department")
RELAX_ORDER = ("material", "fit", "pattern", "colour", "department", "price")
# what answers "which is warmer / cooler": words the catalog's own text uses (a language-pack table)
COMPARISONS: dict[str, tuple[str, frozenset[str]]] = {
    "warm": ("warmer", frozenset("wool merino cashmere fleece lined padded quilted thermal teddy fur pile borg brushed "
                                 "thick chunky wadded wadding insulating warm knitted heavyweight".split())),
    "cool": ("cooler", frozenset("linen cotton airy lightweight light thin sleeveless mesh breathable jersey short "
                                 "strappy".split())),
    "soft": ("softer", frozenset("soft cashmere fleece brushed velvet velour teddy plush jersey".split())),
}
COMPARE_WORDS = {"warm": r"warm(er|est)?|keep (me )?warm|for winter|for the cold", "cool": r"cool(er|est)|light(er|est)|airier|for summer|for the heat",
                 "soft": r"soft(er|est)?"}

HELP = ("Tell me what you are looking for (\"a navy striped shirt\", \"black ankle boots for women\") and I will name "
        "products from the catalog and say why each fits. Then refine (\"in red\", \"cheaper\", \"not striped\"), ask for "
        "more like one of them, or ask about any of them (\"is the first one machine-washable?\").")


# ----------------------------------------------------------------------------- the state
@dataclass
class State:
    """What the shopper is after, derived from the whole conversation."""

    wanted: dict[str, Term] = field(default_factory=dict)  # kind -> the value asked for (latest wins)
    excluded: list[Term] = field(default_factory=list)  # values ruled out ("not black")
    price_min: float | None = None
    price_max: float | None = None
    price_note: str | None = None  # how a relative bound came about ("cheaper than 0.02, the cheapest shown")
    words: list[str] = field(default_factory=list)  # context words no term took ("party", "summer")
    shown: list[str] = field(default_factory=list)  # the last list shown
    seen: list[str] = field(default_factory=list)  # every product listed since the request began
    focus: str | None = None  # the product last talked about (what "it" means)
    rejected: list[str] = field(default_factory=list)  # products the shopper said they do not like

    @property
    def empty(self) -> bool:
        return not (self.wanted or self.excluded or self.words or self.price_min is not None or self.price_max is not None)

    def terms(self) -> list[Term]:
        return [self.wanted[k] for k in KIND_ORDER if k in self.wanted] + list(self.excluded)

    def to_dict(self) -> dict[str, Any]:
        return {"wanted": {k: t.value for k, t in self.wanted.items()}, "excluded": [f"{t.kind}: {t.value}" for t in self.excluded],
                "price_min": self.price_min, "price_max": self.price_max, "words": list(self.words), "shown": list(self.shown),
                "focus": self.focus, "rejected": list(self.rejected)}

    def copy(self) -> "State":
        return replace(self, wanted=dict(self.wanted), excluded=list(self.excluded), words=list(self.words),
                       shown=list(self.shown), seen=list(self.seen), rejected=list(self.rejected))

    def without(self, kinds: Sequence[str]) -> "State":
        """A copy with these constraints dropped ("price" drops both bounds): a relaxed search."""
        relaxed = self.copy()
        for kind in kinds:
            relaxed.wanted.pop(kind, None)
            if kind == "price":
                relaxed.price_min = relaxed.price_max = relaxed.price_note = None
        return relaxed


@dataclass
class Turn:
    """How one user message was understood."""

    kind: str  # request | refine | switch | similar | more | question | compare | thanks | help | image
    text: str
    targets: list[str] = field(default_factory=list)  # products it refers to (question / compare)
    anchor: str | None = None  # "like this one"
    companions: list[str] = field(default_factory=list)  # "to go with them"
    companion_label: str = ""
    changed: list[str] = field(default_factory=list)  # what a refinement changed, for the answer's first line
    named_kinds: set[str] = field(default_factory=set)  # kinds this very message named: dropped last, if ever


@dataclass
class ChatAnswer:
    """An answer as pieces: plain text, or generators of text (a model writing), streamed in order."""

    kind: str  # where the products came from: search | recommend | similar | image_search | product_question | ...
    products: list[str] = field(default_factory=list)
    grounding: dict[str, Any] = field(default_factory=dict)
    turn: str = ""
    understood: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    parts: list[str | Callable[[], Iterator[str]]] = field(default_factory=list)
    _pieces: list[str] | None = None

    def stream(self) -> Iterator[str]:
        if self._pieces is not None:
            yield from self._pieces
            return
        pieces: list[str] = []
        for part in self.parts:
            for piece in ([part] if isinstance(part, str) else part()):
                if piece:
                    pieces.append(piece)
                    yield piece
        self._pieces = pieces

    @property
    def text(self) -> str:
        if self._pieces is None:
            for _ in self.stream():
                pass
        return "".join(self._pieces or [])

    def extra(self) -> dict[str, Any]:
        """The machine-readable side of the answer (the response's `whyrec` object)."""
        named = list(dict.fromkeys(ITEM_REF_RE.findall("".join(self._pieces or []))))
        return {"kind": self.kind, "turn": self.turn, "understood": self.understood, "products": self.products,
                "named": named, "grounding": self.grounding, "state": self.state}


# ----------------------------------------------------------------------------- entry point
def answer(engine: Engine, settings: Settings, messages: Sequence[ChatMessage], user: str | None = None) -> ChatAnswer:
    """The answer to the last user message, given everything said before it."""
    last_at = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user" and messages[i].text().strip()), None)
    if last_at is None:
        return ChatAnswer("help", turn="help", parts=[HELP])
    last = messages[last_at]
    image = _data_image(last, settings)
    if image is not None:
        return _image_search(engine, settings, image, last.text().strip()[:QUERY_MAX])
    state = replay(engine, messages[:last_at])
    text = last.text().strip()[:QUERY_MAX]
    before = state.copy()
    turn = interpret(engine, state, text)
    history = shopper_items(engine, user, settings.history_used) if user else []
    log.debug("chat turn %r -> %s (changed %s); state: %s", text[:80], turn.kind, turn.changed, compose(state))
    return respond(engine, settings, before, state, turn, history)


def replay(engine: Engine, messages: Sequence[ChatMessage]) -> State:
    """The state after these messages: user turns update it, assistant turns say what was shown."""
    state = State()
    for m in messages:
        if m.role == "user" and m.text().strip():
            interpret(engine, state, m.text().strip()[:QUERY_MAX])
        elif m.role in ("assistant", "system", "developer"):
            _note_shown(engine, state, m)
    return state


def _note_shown(engine: Engine, state: State, m: ChatMessage) -> None:
    """Which products a previous message showed: a numbered list sets the last list shown; a
    message about one product makes it what "it" means."""
    extra = (m.model_extra or {}).get("whyrec") if m.model_extra else None
    text = m.text()
    listed = [i for i in LIST_LINE_RE.findall(text) if i in engine.catalog.by_id]
    if not listed and isinstance(extra, dict) and extra.get("turn") not in ("question", "compare"):
        listed = [i for i in extra.get("products") or [] if i in engine.catalog.by_id]
    if listed:
        state.shown = listed
        state.seen += [i for i in listed if i not in state.seen]
        state.focus = None
        return
    named = _ids_in(engine, text)
    if len(named) == 1:
        state.focus = named[0]
    elif named and m.role != "assistant" and not state.shown:  # a system note naming products
        state.shown = named


# ----------------------------------------------------------------------------- reading a turn
def interpret(engine: Engine, state: State, text: str) -> Turn:
    """Route one user message from the state, updating the state in place."""
    if THANKS_RE.match(text):
        return Turn("thanks", text)
    if GREETING_RE.match(text):
        return Turn("help", text)
    with_at = GOES_WITH_RE.search(text)
    own = text[: with_at.start()] if with_at else text  # "a black jacket | to go with the white jeans"
    q = read(engine, own)
    named_ids = _ids_in(engine, text)
    ordinals = _ordinals(text, state)
    single = named_ids[:1] or (ordinals if len(ordinals) == 1 else []) or ([_focus(state)] if SINGLE_RE.search(text) and _focus(state) else [])
    new_types = [t for t in _primary(q.wanted) if t.kind == "product_type"]
    current = state.wanted.get("product_type")
    type_changed = bool(new_types) and (current is None or new_types[0].value != current.value)
    asks = bool(QUESTION_RE.search(text)) and not REQUEST_RE.search(text)

    # comparisons and questions about shown products
    if state.shown and not type_changed and COMPARE_RE.search(text) and not REQUEST_CORE_RE.search(text) and not SIMILAR_RE.search(text):
        targets = [state.shown[i] for i in _ordinal_indexes(text, state)] if len(ordinals) > 1 else list(state.shown)
        return Turn("compare", text, targets=targets)
    if named_ids and not REQUEST_RE.search(text) and not SIMILAR_RE.search(text):
        state.focus = named_ids[0]
        return Turn("question", text, targets=named_ids[:1])
    if asks and not SIMILAR_RE.search(text) and not MORE_RE.search(text) and (single or (state.shown and not q.wanted)):
        if PLURAL_RE.search(text) and not single and state.shown:
            return Turn("compare", text, targets=list(state.shown))
        target = single[0] if single else _focus(state)
        if target is not None and not (type_changed and not single):
            state.focus = target
            return Turn("question", text, targets=[target])

    if REJECT_RE.search(text) and (single or ordinals):  # "I don't like the first one": never show it again
        state.rejected += [i for i in (ordinals or single) if i not in state.rejected]
        text = REJECT_RE.sub(" ", text)
        single, ordinals = [], []

    # requests
    if type_changed or state.empty:
        return _switch(engine, state, q, text, with_at, ordinals, named_ids)
    if SIMILAR_RE.search(text) and (single or ordinals or state.shown):
        anchor = single[0] if single else (_focus(state) or state.shown[0])
        turn = _refine(engine, state, q, text, "similar")
        turn.anchor = anchor
        return turn
    if MORE_RE.search(text) and not q.terms and q.price_min is None and q.price_max is None:
        return Turn("more", text)
    if ordinals or named_ids:  # "show me the second one", "the last one?": about that product
        if not q.terms and q.price_min is None and q.price_max is None and not CHEAPER_RE.search(text) and not DEARER_RE.search(text):
            state.focus = (named_ids or ordinals)[0]
            return Turn("question", text, targets=[state.focus])
    turn = _refine(engine, state, q, text, "refine")
    if (ordinals or named_ids) and turn.changed and not with_at:  # "the second one in red": like that one, in red
        turn.kind, turn.anchor = "similar", (named_ids or ordinals)[0]
    if with_at:
        turn.companions, turn.companion_label = _companions(engine, state, text[with_at.start():], ordinals, named_ids)
    if not turn.changed and not q.words and not with_at:
        return Turn("help", text)
    return turn


def _switch(engine: Engine, state: State, q: Query, text: str, with_at, ordinals: list[str], named_ids: list[str]) -> Turn:
    """A new request: what it names, plus the department (and with "same", the look) carried over."""
    prev = state.copy()
    carried: dict[str, Term] = {}
    if "department" in prev.wanted:
        carried["department"] = prev.wanted["department"]
    if SAME_RE.search(text.split(" with ")[0]) and not prev.empty:
        carried.update({k: t for k, t in prev.wanted.items() if k in ("colour", "pattern", "material")})
    companions, label = ([], "")
    if with_at:
        companions, label = _companions(engine, prev, text[with_at.start():], ordinals, named_ids)
    state.wanted = carried
    state.excluded = []
    state.price_min = state.price_max = None
    state.price_note = None
    state.words = []
    state.seen = []
    turn = _refine(engine, state, q, text, "switch" if not prev.empty else "request")
    turn.companions, turn.companion_label = companions, label
    return turn


def _companions(engine: Engine, prev: State, tail: str, ordinals: list[str], named_ids: list[str]) -> tuple[list[str], str]:
    """What "to go with ..." points at: named or ordinal items, else the last list shown."""
    single = [_focus(prev)] if re.search(r"\b(it|this|that|this one|that one)\b", tail, re.I) and _focus(prev) else []
    picked = [i for i in named_ids if i in tail] or [o for o in ordinals if o in prev.shown] or single or list(prev.shown[:3])
    if not picked:
        return [], ""
    if len(picked) == 1:
        p = engine.catalog.by_id[picked[0]]
        return picked, f"{p.title} (item {p.id})"
    return picked, "the " + describe(prev, plural=True, lower=True) + " you saw"


def _refine(engine: Engine, state: State, q: Query, text: str, kind: str) -> Turn:
    """Apply what a message names to the state: new values replace old ones of their kind,
    negated ones become exclusions, prices and "cheaper" set bounds, new words add context."""
    changed: list[str] = []
    for t in _primary(q.terms):
        if t.negated:
            if not any(e.kind == t.kind and e.value == t.value for e in state.excluded):
                state.excluded.append(t)
                changed.append(f"not {t.value}")
            have = state.wanted.get(t.kind)
            if have is not None and have.value in vocab_of(engine).accepts(t.kind, t.value):
                del state.wanted[t.kind]
        else:
            if t.kind in state.wanted and state.wanted[t.kind].value == t.value:
                continue
            state.wanted[t.kind] = t
            state.excluded = [e for e in state.excluded if not (e.kind == t.kind and t.value in vocab_of(engine).accepts(t.kind, e.value))]
            changed.append(t.value)
    if q.price_min is not None or q.price_max is not None:
        state.price_min, state.price_max, state.price_note = q.price_min, q.price_max, None
        changed.append("price")
    pool = [engine.catalog.by_id[i] for i in (_ordinals(text, state) or state.shown) if i in engine.catalog.by_id]
    prices = [p.price for p in pool if p.price is not None]
    if CHEAPER_RE.search(text) and prices and q.price_max is None:
        low = min(prices)
        state.price_max, state.price_note = math.nextafter(low, 0.0), f"cheaper than {_money(low)}, the lowest price shown"
        changed.append("cheaper")
    elif DEARER_RE.search(text) and prices and q.price_min is None:
        high = max(prices)
        state.price_min, state.price_note = math.nextafter(high, math.inf), f"dearer than {_money(high)}, the highest price shown"
        changed.append("dearer")
    new_words = [w for w in dict.fromkeys(q.words) if w not in NOISE and not w.isdigit() and w not in state.words]
    state.words = (state.words + new_words)[-6:]
    state.focus = None
    named = {t.kind for t in _primary(q.terms) if not t.negated}
    if "price" in changed or "cheaper" in changed or "dearer" in changed:
        named.add("price")
    return Turn(kind, text, changed=changed, named_kinds=named)


def _primary(terms: Sequence[Term]) -> list[Term]:
    """Drop the pattern/material a product-type word implies ("jeans" -> denim)."""
    typed = {t.start for t in terms if t.kind == "product_type"}
    return [t for t in terms if t.kind == "product_type" or t.start not in typed]


def _focus(state: State) -> str | None:
    return state.focus or (state.shown[0] if state.shown else None)


def _ordinal_indexes(text: str, state: State) -> list[int]:
    out: list[int] = []
    for m in ORDINAL_RE.finditer(text):
        n = ORDINALS[m.group(1).lower()] if m.group(1) else int(m.group(2))
        idx = len(state.shown) - 1 if n == -1 else n - 1
        if 0 <= idx < len(state.shown) and idx not in out:
            out.append(idx)
    return out


def _ordinals(text: str, state: State) -> list[str]:
    return [state.shown[i] for i in _ordinal_indexes(text, state)]


def _ids_in(engine: Engine, text: str) -> list[str]:
    seen: list[str] = []
    for tok in ID_RE.findall(text or ""):
        if tok in engine.catalog.by_id and tok not in seen:
            seen.append(tok)
    return seen


# ----------------------------------------------------------------------------- saying what was understood
TYPE_PLURALS = {"dress": "dresses", "underwear bottom": "underwear bottoms", "leggings/tights": "leggings and tights",
                "jumpsuit/playsuit": "jumpsuits and playsuits", "pyjama set": "pyjama sets", "flat shoe": "flat shoes",
                "swimwear bottom": "swimwear bottoms", "bikini top": "bikini tops", "vest top": "vest tops", "hair accessory": "hair accessories",
                "polo shirt": "polo shirts", "sunglasses": "sunglasses", "jewellery": "jewellery", "swimwear": "swimwear"}
DEPARTMENT_WORDS = {"men": "for men", "women": "for women", "kids": "for kids", "baby": "for babies", "teen": "for teens",
                    "sport": "from the sport range"}


def _say(t: Term) -> str:
    return "plain" if (t.kind, t.value) == ("pattern", "solid") else t.value


def _plural(value: str) -> str:
    if value in TYPE_PLURALS:
        return TYPE_PLURALS[value]
    if value.endswith(("s", "wear")):
        return value
    return value + ("es" if value.endswith(("x", "ch", "sh")) else "s")


def describe(state: State, plural: bool = True, lower: bool = False) -> str:
    """The state in words: 'red checked dresses for women ("party"), not black, cheaper than 0.02'."""
    adj = list(dict.fromkeys(_say(state.wanted[k]) for k in ("colour", "pattern", "material") if k in state.wanted))
    fit = state.wanted.get("fit")
    kind = state.wanted.get("product_type")
    noun = (_plural(kind.value) if plural else kind.value) if kind else ("products" if plural else "product")
    words = " ".join(adj + ([f"{fit.value}-fit"] if fit else []) + [noun])
    if "department" in state.wanted:
        words += " " + DEPARTMENT_WORDS.get(state.wanted["department"].value, f"from the {state.wanted['department'].value} range")
    if state.words:
        words += " (" + ", ".join(f'"{w}"' for w in state.words) + ")"
    for t in state.excluded:
        words += f", not {_say(t)}"
    if state.price_note:
        words += ", " + state.price_note
    elif state.price_min is not None and state.price_max is not None:
        words += f", priced {_money(state.price_min)} to {_money(state.price_max)}"
    elif state.price_max is not None:
        words += f", priced at most {_money(state.price_max)}"
    elif state.price_min is not None:
        words += f", priced at least {_money(state.price_min)}"
    return words if lower else words[:1].upper() + words[1:]


def _money(x: float) -> str:
    return f"{x:.2f}" if x >= 1 else f"{x:.4f}".rstrip("0")


def compose(state: State) -> str:
    """The state as request words (what the encoders embed and rationales answer): the shopper's
    own phrases, exclusions last, each after a comma so a "not" never reaches past its value."""
    words = [state.wanted[k].phrase for k in ("colour", "pattern", "material", "fit", "product_type") if k in state.wanted]
    if "department" in state.wanted:
        words.append("for " + state.wanted["department"].phrase)
    words += state.words
    text = " ".join(words)
    for t in state.excluded:
        text += f", not {t.phrase}"
    return text.strip(" ,")


def state_query(engine: Engine, state: State) -> Query:
    """The Query the state stands for: its words read once, its terms and price bounds exactly the state's."""
    text = compose(state) or ("products" if state.price_min is not None or state.price_max is not None else "")
    return replace(read(engine, text), terms=tuple(state.terms()), price_min=state.price_min,
                   price_max=state.price_max, words=tuple(state.words))


def satisfies(engine: Engine, product, state: State, drop: Sequence[str] = ()) -> bool:
    """Whether a product meets every hard constraint of the state (per the vocabulary's judgement)."""
    vocab = vocab_of(engine)
    values = vocab.item_values(product)
    for t in state.terms():
        if t.kind in drop:
            continue
        ok = vocab.matches(t, values)
        if t.negated and ok is False or not t.negated and not ok:
            return False
    if "price" not in drop:
        if state.price_max is not None and (product.price is None or product.price > state.price_max):
            return False
        if state.price_min is not None and (product.price is None or product.price < state.price_min):
            return False
    return True


# ----------------------------------------------------------------------------- answering a turn
def respond(engine: Engine, settings: Settings, before: State, state: State, turn: Turn, history: Sequence[str]) -> ChatAnswer:
    if turn.kind == "thanks":
        return _done(ChatAnswer("help", turn="thanks", parts=["You're welcome. Ask for anything else, or refine what I showed "
                                                               "(\"in blue\", \"cheaper\", \"more like the second one\")."]), state)
    if turn.kind == "help":
        return _done(ChatAnswer("help", turn="help", parts=[HELP]), state)
    if turn.kind == "question":
        return _done(_question(engine, settings, engine.catalog.by_id[turn.targets[0]], turn.text), state)
    if turn.kind == "compare":
        return _done(compare(engine, [engine.catalog.by_id[i] for i in turn.targets], turn.text), state)
    return _listing(engine, settings, before, state, turn, history)


def _done(ans: ChatAnswer, state: State) -> ChatAnswer:
    ans.state = state.to_dict()
    return ans


def _listing(engine: Engine, settings: Settings, before: State, state: State, turn: Turn, history: Sequence[str]) -> ChatAnswer:
    k = settings.chat_k
    exclude = (set(state.seen) if turn.kind == "more" else set()) | set(state.rejected)
    query = state_query(engine, state)
    if not query.text.strip():
        return _done(ChatAnswer("help", turn="help", parts=[HELP]), state)
    hits, dropped = [], ()
    for dropped in _relaxations(state, turn.named_kinds):
        hits = _fetch(engine, state, query, turn, history, k * 4 + len(exclude), dropped)
        hits = [h for h in hits if h.id not in exclude and satisfies(engine, engine.catalog.by_id[h.id], state, dropped)][:k]
        if hits:
            break
    source = "similar" if turn.anchor else "recommend" if (history and not turn.companions) else "search"
    understood = _understood(engine, before, state, turn, history)
    if not hits:
        text = (f"That is all: I have no more {describe(state, lower=True)} beyond the ones shown." if exclude else
                f"I found no {describe(state, lower=True)} in the catalog.")
        return _done(ChatAnswer(source, turn=turn.kind, understood=understood, parts=[text]), state)
    intro = understood + ":"
    if dropped:
        relaxed = state.without(dropped)
        intro = (f"The catalog has no {describe(state, lower=True)}. The nearest I have are "
                 f"{describe(relaxed, lower=True)} (without the {', '.join(dropped)} you asked for):")
    elif len(hits) < k:
        intro = understood + f" (the catalog has only {len(hits)}" + (" more" if exclude else "") + "):"
    if history and not turn.companions and not turn.anchor:
        intro = intro[:-1] + f", picked with your {len(history)} past purchases in mind:"
    grounding: list[dict] = []
    ans = ChatAnswer(source, [h.id for h in hits], {"items": grounding, "relaxed": list(dropped)}, turn.kind, understood, parts=[intro + "\n"])
    request_text = query.text
    for n, hit in enumerate(hits, 1):
        ans.parts.append(_item_part(engine, settings, n, hit, request_text, history, grounding))
    ans.parts.append("Ask me about any of them (\"is the first one lined?\"), or refine (\"in blue\", \"cheaper\", \"more like the second one\").")
    state.shown = [h.id for h in hits]
    state.seen += [i for i in state.shown if i not in state.seen]
    return _done(ans, state)


def _relaxations(state: State, keep: set[str] = frozenset()) -> Iterator[tuple[str, ...]]:
    """No constraint dropped first; then, cumulatively, the softest ones (never the product type),
    what the latest message asked for last ("in black?" keeps black and drops an older "sport")."""
    yield ()
    dropped: list[str] = []
    for kind in [k for k in RELAX_ORDER if k not in keep] + [k for k in RELAX_ORDER if k in keep]:
        present = kind in state.wanted if kind != "price" else (state.price_min is not None or state.price_max is not None)
        if present:
            dropped.append(kind)
            yield tuple(dropped)


def _fetch(engine: Engine, state: State, query: Query, turn: Turn, history: Sequence[str], n: int, dropped: Sequence[str]):
    """Candidates from the searcher: search for the state; recommend when there is something to be
    like (an anchor, items to go with, or the shopper's purchases)."""
    if dropped:
        state = state.without(dropped)
        query = state_query(engine, state)
        if not query.text.strip():
            return []
    filters = {k: v for k, v in (("price_min", state.price_min), ("price_max", state.price_max)) if v is not None} or None
    like = [turn.anchor] if turn.anchor else list(turn.companions) or list(history)
    if like:
        return engine.searcher.recommend(like, n, query=query.text, filters=filters)
    return engine.searcher.search(query, n, filters)


def _understood(engine: Engine, before: State, state: State, turn: Turn, history: Sequence[str]) -> str:
    """The answer's first words: what it took the shopper to mean."""
    said = describe(state)
    if turn.kind == "more":
        return f"More {describe(state, lower=True)}"
    if turn.anchor:
        p = engine.catalog.by_id[turn.anchor]
        if turn.changed:
            return f"{said}, like {p.title} (item {p.id}) you saw"
        return f"More {describe(state, lower=True)} like {p.title} (item {p.id})"
    if turn.companions:
        return f"{said} to go with {turn.companion_label}"
    return said


def _item_part(engine: Engine, settings: Settings, n: int, hit, request_text: str, history: Sequence[str], grounding: list[dict]):
    product = engine.catalog.by_id[hit.id]

    def gen() -> Iterator[str]:
        yield f"{n}. {product.title} (item {product.id}): "
        r = None
        streamer = getattr(engine.explainer, "explain_stream", None)
        if callable(streamer):  # a model writes: its words go out as they are generated (checked clause by clause)
            from api.service import history_evidence
            from synth_data.explain import gather_evidence

            hist = [engine.catalog.by_id[i] for i in history_evidence(engine, product.id, history, settings.explain_history)]
            evidence = gather_evidence(request_text, product, score=float(hit.dense), history=hist or None)
            r = yield from streamer(request_text, product, evidence)
        else:
            r, evidence = rationale(engine, settings, request_text, product, float(hit.dense), history)
            text = r.text
            for link in getattr(evidence, "history", []) or []:  # purchases it points at get their ids too
                quoted = '"' + link.title.replace('"', "'") + '"'
                if quoted in text:
                    text = text.replace(quoted, f"{quoted} (item {link.item_id})", 1)
            yield text
        grounding.append({"id": product.id, "title": product.title, "price": product.price, "facts_used": list(r.facts_used),
                          "backend": r.backend, "fallback_reason": r.fallback_reason, "score": float(hit.score)})
        yield "\n"

    return gen


# ----------------------------------------------------------------------------- questions about one product
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
STOP = set("""a an the is it its it's this that one be are was were do does did can could would should will of for to in on
with and or but about me my i you your what which who how much many any some tell please there have has item product
made does really also very more than them they out at as by from not no yes if so first second third fourth fifth last
number option""".split())
PHOTO_RE = re.compile(r"\b(look|looks|photo|picture|neckline|neck|collar|sleeves?|length|long|short|print|buttons?|pockets?|"
                      r"hood|zip|zipper|strap|straps|waist|hem|logo|shape|style|design)\b", re.I)


def _question(engine: Engine, settings: Settings, product, question: str) -> ChatAnswer:
    """From the facts and the description; what the photo shows from the tuned LLaVA when it serves."""
    ans = answer_about(product, question)
    asker = getattr(engine.explainer, "answer_stream", None)
    if callable(asker) and PHOTO_RE.search(question) and "does not say" in ans.text:
        said = ans.text

        def gen() -> Iterator[str]:
            yield f"About {product.title} (item {product.id}): "
            out = yield from asker(question, product)
            ans.grounding["photo_answer"] = bool(out)
            if not out:
                yield said.split(": ", 1)[1]

        ans.parts = [gen]
    return ans


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
        if label == "price" and product.price is not None:
            value = _money(product.price)
            facts.setdefault("price", value)
        if value is None:
            lines.append(f"The catalog does not say what {label} it has.")
        else:
            shown = f"{value}" if label != "price" else f"{value} (in the catalog's currency units)"
            lines.append(f"The catalog gives its {label} as {shown}.")
            used.append(next(k for k in keys if k in facts))
    if not lines and not _content_words(question):  # "show me the second one": what the catalog says of it
        v = item_values(product)
        said = [", ".join(sorted(v[k])) for k in ("colour", "pattern", "product_type", "material", "department") if v.get(k)]
        lines.append("The catalog lists it as: " + "; ".join(said) + (f"; price {_money(product.price)}" if product.price is not None else "") + ".")
        if product.description:
            lines.append(f"Its description reads: \"{product.description.strip()}\"")
        used += ["colour", "product_type", "description"]
    if not lines:
        lines.append(_free_text_answer(product, facts, question, used))
    if (re.search(r"\b(describe|tell me about|tell me more|what is this|details|more about)\b", question, re.I) and product.description
            and "description" not in used):
        lines.append(f"Its description reads: \"{product.description.strip()}\"")
        used.append("description")
    text = f"About {name}: " + " ".join(lines)
    return ChatAnswer("product_question", [product.id], {"facts_used": sorted(set(used)), "terms": [t.phrase for t in terms]},
                      turn="question", parts=[text])


def _kind_fact(facts: dict[str, str], kind: str) -> str | None:
    keys = {"colour": ("colour",), "product_type": ("product_type",), "pattern": ("pattern",), "material": ("material",),
            "department": ("index_group", "department"), "fit": ("fit",)}.get(kind, (kind,))
    return next((facts[k] for k in keys if k in facts), None)


def _content_words(question: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z\-]+", question.lower()) if w not in STOP and w not in NOISE and len(w) > 2]


def _mentions(product, facts: dict[str, str], words: Sequence[str]) -> list[str]:
    """Sentences of the item's own text (description, facts) that use one of the words (by stem)."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", product.description or "") if s.strip()]
    sentences += [f"{k.replace('_', ' ')}: {v}" for k, v in facts.items()]
    stems = {w.rstrip("s")[:6] for word in words for w in word.split("-") if len(w) > 2 and w not in STOP}
    return [s for s in sentences if any(re.search(rf"\b{re.escape(st)}", s.lower()) for st in stems)]


def _free_text_answer(product, facts: dict[str, str], question: str, used: list[str]) -> str:
    """Look the question's content words up in the item's own text; quote what is there, or say it is not."""
    words = _content_words(question)
    if not words:
        return "The catalog does not say; ask about its colour, type, pattern, department, price or description."
    found = _mentions(product, facts, words)
    subject = " ".join(words)
    if found:
        used.append("description")
        return "The catalog says: " + " ".join(f"\"{s}\"" for s in found[:2]) + f" It says nothing more about {subject}."
    return f"The catalog does not say anything about {subject} for this item."


# ----------------------------------------------------------------------------- comparisons
def compare(engine: Engine, products: list, question: str) -> ChatAnswer:
    """Which of the shown products is cheaper / warmer / cotton ..., from their facts and text only."""
    name = lambda p: f"{p.title} (item {p.id})"  # noqa: E731
    q = read(engine, question)
    lines: list[str] = []
    named: list[str] = []
    sorting: dict[str, list[str]] = {}
    dimension = next((d for d, pat in COMPARE_WORDS.items() if re.search(rf"\b({pat})\b", question, re.I)), None)
    if CHEAPER_RE.search(question) or DEARER_RE.search(question) or re.search(r"\b(price|cost|how much)\b", question, re.I):
        priced = sorted((p for p in products if p.price is not None), key=lambda p: p.price)
        unpriced = [p for p in products if p.price is None]
        if not priced:
            lines.append("The catalog gives no price for " + "; ".join(name(p) for p in unpriced) + ", so I cannot say.")
            named += [p.id for p in unpriced]
        else:
            best = priced[-1] if DEARER_RE.search(question) or re.search(r"\bmost expensive\b", question, re.I) else priced[0]
            word = "most expensive" if best is priced[-1] and len(priced) > 1 and best is not priced[0] else "cheapest"
            lines.append(f"The {word} is {name(best)}, at {_money(best.price)}.")
            lines.append("Prices: " + "; ".join(f"{name(p)} {_money(p.price)}" for p in priced) + ".")
            named += [best.id] + [p.id for p in priced if p.id != best.id]
            if unpriced:
                lines.append("The catalog gives no price for " + "; ".join(name(p) for p in unpriced) + ".")
                named += [p.id for p in unpriced]
    elif q.wanted or q.excluded:
        for t in _primary(q.terms):
            yes, no, unknown = [], [], []
            for p in products:
                _, v = judge([t], vocab_of(engine).item_values(p))  # the grounding checker's verdict (a fibre is not a weave)
                (unknown if v is None else yes if v else no).append(p)
            what = ("not " if t.negated else "") + _say(t)
            if yes:
                lines.append(f"{what.capitalize()}: " + "; ".join(name(p) for p in yes) + ".")
            elif not unknown:
                lines.append(f"None of them is {what}, by the catalog.")
            elif no:
                lines.append(f"The catalog calls none of them {what}.")
            else:
                lines.append(f"The catalog does not say whether any of them is {what}.")
            if no:
                lines.append(f"Not {what}: " + "; ".join(f"{name(p)} ({', '.join(sorted(vocab_of(engine).item_values(p).get(t.kind) or [])) or '?'})" for p in no) + ".")
            if unknown:
                lines.append("It does not say for " + "; ".join(name(p) for p in unknown) + ".")
            named += [p.id for p in yes + no + unknown if p.id not in named]
            sorting = {"yes": [p.id for p in yes], "no": [p.id for p in no], "unknown": [p.id for p in unknown]}
    elif dimension:
        comparative, cues = COMPARISONS[dimension]
        scored = []
        for p in products:
            text = f"{p.title}. {p.description}".lower()
            found = sorted({w for w in re.findall(r"[a-z]+", text) if w in cues})
            scored.append((len(found), p, found))
        scored.sort(key=lambda x: -x[0])
        if not scored or scored[0][0] == 0:
            lines.append(f"The catalog does not say which of them is {comparative}: none of their descriptions speaks to it.")
            named += [p.id for p in products]
        else:
            top, p, found = scored[0]
            lines.append(f"The catalog does not measure it, but going by what it says, {name(p)} looks {comparative}: "
                         f"its text mentions {', '.join(found)}.")
            others = [f"{name(o)}: {', '.join(f) if f else 'nothing to that point'}" for _, o, f in scored[1:]]
            if others:
                lines.append("The others: " + "; ".join(others) + ".")
            named += [x[1].id for x in scored]
    elif RECOMMEND_RE.search(question):  # "which one would you recommend?": the search's own order
        lines.append(f"For what you asked, the search ranks {name(products[0])} first"
                     + (f", then {name(products[1])}" if len(products) > 1 else "") + ". Ask me to compare them on price, colour or fabric.")
        named += [p.id for p in products[:2]]
    elif not _content_words(question):  # "compare the first and the second": their facts side by side
        for p in products:
            v = vocab_of(engine).item_values(p)
            facts = [", ".join(sorted(v[k])) for k in ("colour", "pattern", "product_type", "material") if v.get(k)]
            price = f"price {_money(p.price)}" if p.price is not None else "no price given"
            lines.append(f"{name(p)}: {'; '.join(facts + [price])}.")
            named.append(p.id)
    else:
        words = _content_words(question)
        for p in products:
            facts = {k: str(v) for k, v in p.facts().items() if str(v).strip()}
            found = _mentions(p, facts, words) if words else []
            lines.append(f"{name(p)}: " + (" ".join(f"\"{s}\"" for s in found[:2]) if found else "the catalog does not say."))
            named.append(p.id)
    return ChatAnswer("comparison", named, {"compared": [p.id for p in products], "sorted": sorting}, turn="compare",
                      parts=[" ".join(lines)])


# ----------------------------------------------------------------------------- photos
def _image_search(engine: Engine, settings: Settings, image, question: str) -> ChatAnswer:
    hits = engine.searcher.search_image(image, settings.chat_k, None)
    request_text = question or "items like the photo"
    grounding: list[dict] = []
    ans = ChatAnswer("image_search", [h.id for h in hits], {"items": grounding}, "image", "Products like your photo",
                     parts=["Products from the catalog that look like your photo:\n"])
    for n, hit in enumerate(hits, 1):
        ans.parts.append(_item_part(engine, settings, n, hit, request_text, (), grounding))
    ans.state = {"shown": [h.id for h in hits]}
    return ans


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
