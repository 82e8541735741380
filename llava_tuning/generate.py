"""Rationales from a (tuned) LLaVA: batched greedy or sampled generation, and the `llava` explainer.

A served rationale is composed: the request's fit/misfit sentences are the grounded template's,
and the model writes what it says about the item (offline, `whyrec index describe`, or live for an
item without cached text: the same turn, `describe.describe_turns`, decoded under the item's facts
with no word exempt, kept by the same rule, `describe.keep_item_text`). Every output goes through
synth_data's one check-and-fallback path (`settle`): a text that contradicts a catalog fact, states
one the catalog does not back, or is empty is replaced by the grounded template explainer's, with
`fallback_reason` saying why.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Generator as Gen, Iterator, Sequence

import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from retrieval.catalog import Product
from synth_data.explain import EXPLAINERS, Evidence, GroundedExplainer, Rationale, gather_evidence, register_explainer, settle
from retrieval.vocabulary import item_values
from synth_data.grounding import check, forbidden_phrases
from synth_data.prompts import human_turn
from synth_data.tasks import Task

log = logging.getLogger(__name__)

DEFAULT_MODEL_ENV = "WHYREC_LLAVA_MODEL"
DEFAULT_MODEL = "var/tune/tiny-offline"


@dataclass
class GenerationSettings:
    max_new_tokens: int = 96  # the token budget of one rationale
    do_sample: bool = False  # greedy by default: the same request gets the same words
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    batch_size: int = 8
    seed: int | None = None  # for sampled decoding
    dtype: str = "float32"  # float32 | bfloat16 (faster on CPUs with bf16 support; slightly different words)


def _variants(phrase: str) -> list[str]:
    """The spellings of a phrase a model may write: as typed, capitalised, title case, upper case."""
    return list(dict.fromkeys([phrase, phrase[:1].upper() + phrase[1:], phrase.title(), phrase.upper()]))


@lru_cache(maxsize=8)
def _boundary_tokens(tokenizer) -> frozenset[int]:
    """Tokens after which a new word starts even without a space (they end in a non-letter: a
    quote, a bracket, a newline, a dash), so a word's bare spelling ("red" in '"red"') is a word there."""
    out = set()
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        if not text or not text[-1].isalnum():
            out.add(i)
    return frozenset(out)


@lru_cache(maxsize=8)
def _phrase_ids(tokenizer) -> dict[str, list[tuple[tuple[int, ...], bool]]]:
    """phrase -> its token sequences, each with whether it is the bare spelling (no leading space)."""
    from synth_data.grounding import _phrase_table

    out: dict[str, list[tuple[tuple[int, ...], bool]]] = {}
    for toks, _ in _phrase_table():
        phrase = " ".join(toks)
        seqs: list[tuple[tuple[int, ...], bool]] = []
        for v in _variants(phrase):
            for text, bare in ((" " + v, False), (v, True)):
                ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
                if ids and (ids, bare) not in seqs:
                    seqs.append((ids, bare))
        out[phrase] = seqs
    return out


class FactConstraint(LogitsProcessor):
    """Decode under each item's facts: row b of the batch may not complete any token sequence of the
    phrases `banned[b]` (synth_data.grounding.forbidden_phrases: colour, type, pattern and material
    words that contradict the item). Multi-token words are blocked at their last token, once the
    tokens before it have been written; every spelling is covered: with a leading space (a new word)
    and capitalised, and the bare spelling when the token before it ends a word ('"red"', '(red')."""

    def __init__(self, tokenizer, banned: Sequence[Sequence[str]]):
        ids = _phrase_ids(tokenizer)
        self.boundary = _boundary_tokens(tokenizer)
        # per row: prefix length -> prefix -> (last tokens after any token, last tokens only after a word boundary)
        self.rows: list[dict[int, dict[tuple[int, ...], tuple[set[int], set[int]]]]] = []
        for phrases in banned:
            table: dict[int, dict[tuple[int, ...], tuple[set[int], set[int]]]] = {}
            for phrase in phrases:
                seqs = ids.get(phrase)
                if seqs is None:
                    seqs = [(tuple(tokenizer(t, add_special_tokens=False)["input_ids"]), bare)
                            for v in _variants(phrase) for t, bare in ((" " + v, False), (v, True))]
                for seq, bare in seqs:
                    if not seq:
                        continue
                    slot = table.setdefault(len(seq) - 1, {}).setdefault(seq[:-1], (set(), set()))
                    slot[1 if bare else 0].add(seq[-1])
            self.rows.append(table)

    def blocked(self, row: int, ids: Sequence[int]) -> set[int]:
        """The tokens row `row` may not write next, after the tokens `ids`."""
        out: set[int] = set()
        for n, prefixes in self.rows[row].items():
            if n > len(ids):
                continue
            hit = prefixes.get(tuple(ids[len(ids) - n:]) if n else ())
            if hit is None:
                continue
            out |= hit[0]
            before = len(ids) - n - 1
            if hit[1] and (before < 0 or ids[before] in self.boundary):
                out |= hit[1]
        return out

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if len(self.rows) != scores.shape[0]:
            raise ValueError(f"constraints for {len(self.rows)} rows but a batch of {scores.shape[0]}")
        longest = 1 + max((n for t in self.rows for n in t), default=0)
        tails = input_ids[:, -longest:].tolist()
        for row, tail in enumerate(tails):
            bad = self.blocked(row, tail)
            if bad:
                scores[row, sorted(bad)] = -float("inf")
        return scores


class Generator:
    """Batched generation for conversations that each hold one image."""

    def __init__(self, bundle, settings: GenerationSettings | None = None):
        self.bundle = bundle
        self.settings = settings or GenerationSettings()
        self.processor = bundle.processor
        model = bundle.model
        if self.settings.dtype != "float32":
            model = model.to(getattr(torch, self.settings.dtype))
        self.model = model.eval()
        self.last_new_tokens: list[int] = []  # generated tokens per answer in the last call (up to the end token)

    @torch.inference_mode()
    def generate(self, conversations: Sequence[Sequence[dict]], images: Sequence[Image.Image],
                 settings: GenerationSettings | None = None, banned: Sequence[Sequence[str]] | None = None) -> list[str]:
        """One answer per conversation (its last turn is the human's), in input order. `banned`:
        per conversation, phrases its answer may not contain (see `FactConstraint`)."""
        s = settings or self.settings
        if len(conversations) != len(images):
            raise ValueError(f"{len(conversations)} conversations but {len(images)} images")
        if banned is not None and len(banned) != len(conversations):
            raise ValueError(f"{len(conversations)} conversations but {len(banned)} lists of banned phrases")
        if s.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if s.do_sample and s.seed is not None:
            torch.manual_seed(s.seed)
        out: list[str] = []
        self.last_new_tokens = []
        stop = {self.processor.pad_token_id, self.model.generation_config.eos_token_id}
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        for start in range(0, len(conversations), max(1, s.batch_size)):
            convs = conversations[start : start + s.batch_size]
            encoded = [self.processor.encode(c, add_generation_prompt=True) for c in convs]
            for e in encoded:
                if self.processor.count_images(e.input_ids) != 1:
                    raise ValueError("each conversation needs exactly one <image> token")
            batch = self.processor.pad(encoded, padding_side="left")
            pixels = self.processor.pixel_values(images[start : start + s.batch_size]).to(device, dtype)
            kwargs: dict[str, Any] = {"max_new_tokens": s.max_new_tokens, "do_sample": s.do_sample,
                                      "repetition_penalty": s.repetition_penalty,
                                      "suppress_tokens": [self.processor.image_token_id],
                                      "pad_token_id": self.processor.pad_token_id}
            if s.do_sample:
                kwargs.update(temperature=s.temperature, top_p=s.top_p)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if banned is not None:
                kwargs["logits_processor"] = LogitsProcessorList(
                    [FactConstraint(self.processor.tokenizer, banned[start : start + s.batch_size])])
            ids = self.model.generate(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                                      pixel_values=pixels, **kwargs)
            prompt_len = batch["input_ids"].shape[1]
            for row in ids[:, prompt_len:].tolist():
                n = next((k + 1 for k, t in enumerate(row) if t in stop), len(row))
                self.last_new_tokens.append(n)
                out.append(self.processor.decode(row[:n]))
        return out


    def stream(self, conversation: Sequence[dict], image: Image.Image, settings: GenerationSettings | None = None,
               stop: threading.Event | None = None, banned: Sequence[str] | None = None) -> Iterator[str]:
        """One answer's text as the model writes it: generation runs in a thread and hands each
        decoded piece over through transformers' TextIteratorStreamer. Setting `stop` ends it early."""
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        s = settings or self.settings
        stop = stop or threading.Event()
        encoded = self.processor.encode(conversation, add_generation_prompt=True)
        if self.processor.count_images(encoded.input_ids) != 1:
            raise ValueError("the conversation needs exactly one <image> token")
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        batch = self.processor.pad([encoded], padding_side="left")
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:
                return stop.is_set()

        kwargs: dict[str, Any] = {"max_new_tokens": s.max_new_tokens, "do_sample": s.do_sample, "repetition_penalty": s.repetition_penalty,
                                  "suppress_tokens": [self.processor.image_token_id], "pad_token_id": self.processor.pad_token_id,
                                  "streamer": streamer, "stopping_criteria": StoppingCriteriaList([Stop()])}
        if s.do_sample:
            kwargs.update(temperature=s.temperature, top_p=s.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if banned:
            kwargs["logits_processor"] = LogitsProcessorList([FactConstraint(self.processor.tokenizer, [banned])])
        pixels = self.processor.pixel_values([image]).to(device, dtype)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                                        pixel_values=pixels, **kwargs)
            except BaseException as err:  # surfaced to the reader below
                failure.append(err)
                streamer.end()

        thread = threading.Thread(target=run, name="llava-stream", daemon=True)
        thread.start()
        ended = False
        try:
            for piece in streamer:
                if piece:
                    yield piece
            ended = True
        finally:
            if not ended:  # the reader stopped early: stop the model and let it finish its last step
                stop.set()
                for _ in streamer:
                    pass
            thread.join()
        if failure:
            raise failure[0]


CLAUSE_END = re.compile(r"[.!?;:,](?=\s)")
SENTENCE_END = re.compile(r"[.!?](?=\s)")


def chunks_at(pieces: Iterator[str], end: re.Pattern) -> Iterator[str]:
    """A model's streamed words regrouped into chunks that each end at a boundary of `end` (a clause,
    a sentence), as soon as the boundary is written; what is left once the stream ends comes last."""
    buffer = ""
    for piece in pieces:
        buffer += piece
        ends = list(end.finditer(buffer))
        if ends:
            cut = ends[-1].end()
            yield buffer[:cut]
            buffer = buffer[cut:]
    if buffer.strip():
        yield buffer


def checked_stream(pieces: Iterator[str], product: Product, request: str | None, sources: Sequence[str],
                   stop: threading.Event) -> Gen[str, None, tuple[str, list[str]]]:
    """Pass a model's words on clause by clause, each once the text so far passes the grounding
    check; the first clause that fails stops the model. Returns (text passed on, failure reasons)."""
    said = ""
    for chunk in chunks_at(pieces, CLAUSE_END):
        result = check(said + chunk, product, request=request, sources=sources)
        if not result.ok:
            stop.set()
            return said, result.reasons()
        yield chunk
        said += chunk
    return said, []


def _image_for(product: Product, image_root: str | Path | None) -> Image.Image:
    path = product.image_path
    if path:
        p = Path(path)
        if not p.is_absolute() and image_root is not None:
            p = Path(image_root) / p
        if p.exists():
            with Image.open(p) as im:
                return im.convert("RGB")
    log.warning("item %s has no readable image (%s); the model sees a blank one", product.id, path)
    return Image.new("RGB", (224, 336), (255, 255, 255))


class LlavaExplainer:
    """`explain(request, product, evidence) -> Rationale` written by the tuned LLaVA, checked against
    the catalog, with the grounded template explainer as the fallback.

    Serving (`explain_batch`, `explain_iter`): an item whose text the model wrote offline
    (`item_text`: `whyrec index describe` -> item_text.jsonl) is answered at once by composing the
    request-aware fit/misfit sentences (the grounded template's) with that text; for the others the
    model writes the item text live (the same turn, kept by the same rule, composed the same way:
    `from_words`), in batched calls (`settings.batch_size` each), at most `live_items` per call
    (None: all; the server sets it) and `concurrency` generate calls at once in the process. An item neither cached nor in the live budget gets the grounded rationale,
    with the reason. Every text goes through `settle`."""

    backend = "llava"

    def __init__(self, model: str | Path | None = None, bundle=None, settings: GenerationSettings | None = None,
                 fallback=None, image_root: str | Path | None = None, threads: int | None = None, constrained: bool = True,
                 item_text: str | Path | None = None, live_items: int | None = None, concurrency: int = 1, **overrides: Any):
        if threads:
            torch.set_num_threads(threads)
        if (live_items is not None and live_items < 0) or concurrency < 1:
            raise ValueError("live_items must be >= 0 (None: no limit) and concurrency >= 1")
        self.live_items = live_items
        self.gate = threading.BoundedSemaphore(concurrency)  # generate calls at once in this process
        self.item_texts = ItemTexts.load(item_text) if item_text else ItemTexts({})
        if bundle is None:
            from llava_tuning.adapters import load_model

            model = model or os.environ.get(DEFAULT_MODEL_ENV) or DEFAULT_MODEL
            if not Path(model).exists() and model not in ("tiny-offline", "tiny-random", "llava-1.5-7b"):
                raise FileNotFoundError(f"no tuned LLaVA at {model}: run `whyrec tune` first, or pass model=<adapter|merged dir|preset>")
            bundle = load_model(model, **overrides)
        self.bundle = bundle
        if isinstance(settings, dict):  # from a YAML config's serve.explainer_options
            settings = GenerationSettings(**settings)
        self.generator = Generator(bundle, settings)
        self.fallback = fallback or GroundedExplainer()
        self.image_root = image_root
        self.constrained = constrained  # decode under each item's facts (FactConstraint)
        self.last_latency_s: float | None = None

    def banned(self, request: str, product: Product, evidence: Evidence | None) -> list[str]:
        """What the model may not write when it answers the shopper's own words (`answer_stream`: "is it
        red?" -> "it is not red" must stay writable, so the words asked about are exempt; [] when
        unconstrained). Item text, which names no request, is constrained by `item_banned`."""
        if not self.constrained:
            return []
        sources = [h.title for h in evidence.history] if evidence is not None else []
        return forbidden_phrases(item_values(product), request, sources)

    def item_banned(self, product: Product) -> list[str]:
        """What the model may not write about an item without a request: every colour, type, pattern and
        material word the catalog contradicts or does not back, none exempt ([] when unconstrained)."""
        return forbidden_phrases(item_values(product)) if self.constrained else []

    def item_words(self, products: Sequence[Product], one_call: bool = False) -> list[str]:
        """The model's own words about each item (the offline job's first turn, `describe.describe_turns`),
        decoded under the item's facts; unchecked. `one_call`: one generate call (a response)."""
        from llava_tuning.describe import describe_turns

        convs = [[{"from": "human", "value": describe_turns(p)[0]}] for p in products]
        images = [_image_for(p, self.image_root) for p in products]
        settings = self.generator.settings
        if one_call and len(products) > settings.batch_size:
            settings = dataclasses.replace(settings, batch_size=len(products))
        return self.generator.generate(convs, images, settings, banned=[self.item_banned(p) for p in products])

    def raw(self, items: Sequence[tuple[str, Product, Evidence | None]], one_call: bool = False) -> list[str]:
        """What the live path composes before any check (for evaluation): the request's fit/misfit
        sentences followed by the model's own words about the item, unfiltered."""
        items = [(r, p, e if e is not None else gather_evidence(r, p)) for r, p, e in items]
        from llava_tuning.describe import whole_sentences

        words = self.item_words([p for _, p, _ in items], one_call)
        return [f"{self.fallback.compose(r, p, e).text} {whole_sentences(' '.join(w.split()))}".strip()
                for (r, p, e), w in zip(items, words)]

    def from_words(self, request: str, product: Product, evidence: Evidence, words: str, source: str = "live") -> Rationale:
        """A rationale from the model's words about an item, as served: its catalog-backed sentences
        (`describe.keep_item_text`, the offline job's rule) composed like cached item text; with none
        kept, the grounded rationale with the reason."""
        from llava_tuning.describe import keep_item_text

        kept, reason = keep_item_text(words, product)
        if not kept:
            return settle(RuntimeError(f"the model's item text was refused: {reason}"), request, product, evidence, self.fallback)
        return self.compose(request, product, evidence, ItemText(kept, source))

    def explain_batch(self, items: Sequence[tuple[str, Product, Evidence | None]]) -> list[Rationale]:
        out: list[Rationale | None] = [None] * len(items)
        for i, r in self.explain_iter(items):
            out[i] = r
        return out  # type: ignore[return-value]

    def explain_iter(self, items: Sequence[tuple[str, Product, Evidence | None]]) -> Iterator[tuple[int, Rationale]]:
        """(position, Rationale) as each is ready: composed ones (cached item text) at once, then
        the live ones after one batched generate call."""
        items = [(r, p, e if e is not None else gather_evidence(r, p)) for r, p, e in items]
        live: list[int] = []
        for i, (r, p, e) in enumerate(items):
            cached = self.item_texts.get(p.id)
            if cached is not None:
                yield i, self.compose(r, p, e, cached)
            elif self.live_items is None or len(live) < self.live_items:
                live.append(i)
            else:
                cached_why = self.item_texts.failed.get(p.id)
                why = (f"no cached item text for {p.id}" + (f" (its offline text failed the check: {cached_why})" if cached_why else "")
                       + f" and the live budget ({self.live_items} per response) is spent")
                yield i, settle(RuntimeError(why), r, p, e, self.fallback)
        if not live:
            return
        start = time.perf_counter()
        try:
            with self.gate:  # the model writes what it says about each item; the request's part is composed
                texts: list[str | BaseException] = list(self.item_words([items[i][1] for i in live], one_call=True))
        except Exception as err:  # the model failed: every live item falls back, saying why
            log.warning("llava generation failed: %s", err)
            texts = [err] * len(live)
        self.last_latency_s = (time.perf_counter() - start) / max(1, len(live))
        for i, text in zip(live, texts):
            r, p, e = items[i]
            if isinstance(text, BaseException):
                yield i, settle(text, r, p, e, self.fallback)
            else:
                yield i, self.from_words(r, p, e, text, source=f"{self.backend} live")

    def compose(self, request: str, product: Product, evidence: Evidence, item_text: "ItemText") -> Rationale:
        """The request-aware sentences (what fits, what does not: the grounded template's) followed
        by what the model wrote about the item offline, settled like any text."""
        head = self.fallback.compose(request, product, evidence)
        text = f"{head.text} {item_text.text}".strip()
        used = head.facts_used + [f"item text: written offline by {item_text.model}"]
        return settle(Rationale(text=text, facts_used=used, backend=self.backend), request, product, evidence, self.fallback)

    def explain(self, request: str, product: Product, evidence: Evidence | None = None) -> Rationale:
        return self.explain_batch([(request, product, evidence)])[0]

    def explain_stream(self, request: str, product: Product, evidence: Evidence | None = None) -> Gen[str, None, Rationale]:
        """The rationale as it is written, composed like every llava rationale: the request's fit/misfit
        sentences at once, then the model's item text sentence by sentence, each sent once it is kept
        by the offline job's rule (`describe.keep_item_text`); returns the Rationale. When no sentence is
        kept, what was sent is the grounded rationale, with the reason."""
        from llava_tuning.describe import describe_turns, keep_item_text

        evidence = evidence if evidence is not None else gather_evidence(request, product)
        head = settle(self.fallback.compose(request, product, evidence), request, product, evidence)
        yield head.text
        cached = self.item_texts.get(product.id)
        kept, reason = (cached.text, None) if cached is not None else ("", "empty output")
        if cached is None:
            stop = threading.Event()
            pieces = self.generator.stream([{"from": "human", "value": describe_turns(product)[0]}], _image_for(product, self.image_root),
                                           stop=stop, banned=self.item_banned(product))
            for chunk in chunks_at(pieces, SENTENCE_END):  # each sentence sent once the offline job's rule keeps it
                new, why = keep_item_text(chunk, product, kept)
                if new != kept:
                    yield " " + new[len(kept):].strip()
                    kept, reason = new, None
                elif not kept:
                    reason = why
        else:
            yield " " + kept
        if not kept:
            head.fallback_reason = f"the model's item text was refused: {reason}"
            return head
        used = head.facts_used + [f"item text: written {'offline by ' + cached.model if cached else 'live'}"]
        return Rationale(text=f"{head.text} {kept}", facts_used=used, backend=self.backend)

    def answer_stream(self, question: str, product: Product) -> Gen[str, None, str]:
        """A shopper's question about the item, answered by the model from its photo and facts (the
        tuned 'question' turn), checked clause by clause; returns what was sent ("" = nothing passed)."""
        conv = [{"from": "human", "value": human_turn(Task("question", [product], question=question), image=True)}]
        stop = threading.Event()
        pieces = self.generator.stream(conv, _image_for(product, self.image_root), stop=stop,
                                       banned=self.banned(question, product, None))
        said, _ = yield from checked_stream(pieces, product, None, [], stop)
        return said.strip()

    def _checked(self, text: str, request: str, product: Product, evidence: Evidence) -> Rationale:
        """The model's text through synth_data's one check-and-fallback path (`settle`)."""
        return settle(Rationale(text=text, facts_used=[], backend=self.backend), request, product, evidence, self.fallback)


@dataclass
class ItemText:
    """What the model says about an item without a request (checked when it was written)."""

    text: str
    model: str


class ItemTexts:
    """The offline item-text cache (`<index dir>/item_text.jsonl`: {"id", "text", "model", "checked"})."""

    def __init__(self, texts: dict[str, ItemText], failed: dict[str, str] | None = None):
        self.texts = texts
        self.failed = failed or {}  # id -> why its offline text was refused (not served)

    def __len__(self) -> int:
        return len(self.texts)

    def get(self, item_id: str) -> ItemText | None:
        return self.texts.get(item_id)

    @classmethod
    def load(cls, path: str | Path) -> "ItemTexts":
        """Read the cache; a missing file is an empty cache (logged), a line not checked is skipped."""
        import json

        path = Path(path)
        if not path.exists():
            log.warning("no item-text cache at %s: every rationale is generated live or falls back", path)
            return cls({})
        texts: dict[str, ItemText] = {}
        failed: dict[str, str] = {}
        with path.open() as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    key = str(rec["id"])  # a later line for an id (a retry) replaces the earlier one
                    texts.pop(key, None)
                    failed.pop(key, None)
                    if rec.get("checked") and rec.get("text"):
                        texts[key] = ItemText(rec["text"], rec.get("model", "?"))
                    else:
                        failed[key] = rec.get("reason") or "empty or unchecked"
        log.info("item-text cache %s: %d items (%d refused by the check)", path, len(texts), len(failed))
        return cls(texts, failed)


def _factory(**kwargs: Any) -> LlavaExplainer:
    return LlavaExplainer(**kwargs)


if "llava" not in EXPLAINERS:
    register_explainer("llava", _factory)
