"""Rationales from a (tuned) LLaVA: batched greedy or sampled generation, and the `llava` explainer.

The prompt is synth_data's `rationale_prompt` (the item's image, its catalog facts and the
shopper's request), the very human turn the model was tuned on; purchase history, when given, is
added as one more data line. Every output goes through synth_data's one check-and-fallback path
(`settle`): a rationale that contradicts a catalog fact, states one the catalog does not back, or
is empty is replaced by the grounded template explainer's, with `fallback_reason` saying why.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from retrieval.catalog import Product
from synth_data.explain import EXPLAINERS, Evidence, GroundedExplainer, Rationale, gather_evidence, register_explainer, settle
from synth_data.prompts import clean, rationale_prompt

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
                 settings: GenerationSettings | None = None) -> list[str]:
        """One answer per conversation (its last turn is the human's), in input order."""
        s = settings or self.settings
        if len(conversations) != len(images):
            raise ValueError(f"{len(conversations)} conversations but {len(images)} images")
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
            ids = self.model.generate(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                                      pixel_values=pixels, **kwargs)
            prompt_len = batch["input_ids"].shape[1]
            for row in ids[:, prompt_len:].tolist():
                n = next((k + 1 for k, t in enumerate(row) if t in stop), len(row))
                self.last_new_tokens.append(n)
                out.append(self.processor.decode(row[:n]))
        return out


def explain_prompt(request: str, product: Product, evidence: Evidence | None = None) -> str:
    """The human turn: synth's rationale prompt, plus the shopper's purchases when known."""
    text = rationale_prompt(request, product, image=True)
    if evidence is not None and evidence.history:
        bought = "; ".join(f'"{clean(h.title, 120)}" ({", ".join(f"{k} {v}" for k, v in h.shared)})' for h in evidence.history)
        head, sep, instruction = text.rpartition("\n")
        text = f"{head}\n<purchase_history>\nbought before: {bought}\n</purchase_history>{sep}{instruction}"
    return text


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
    the catalog, with the grounded template explainer as the fallback."""

    backend = "llava"

    def __init__(self, model: str | Path | None = None, bundle=None, settings: GenerationSettings | None = None,
                 fallback=None, image_root: str | Path | None = None, threads: int | None = None, **overrides: Any):
        if threads:
            torch.set_num_threads(threads)
        if bundle is None:
            from llava_tuning.adapters import load_model

            model = model or os.environ.get(DEFAULT_MODEL_ENV) or DEFAULT_MODEL
            if not Path(model).exists() and model not in ("tiny-offline", "tiny-random", "llava-1.5-7b"):
                raise FileNotFoundError(f"no tuned LLaVA at {model}: run `whyrec tune` first, or pass model=<adapter|merged dir|preset>")
            bundle = load_model(model, **overrides)
        self.bundle = bundle
        self.generator = Generator(bundle, settings)
        self.fallback = fallback or GroundedExplainer()
        self.image_root = image_root
        self.last_latency_s: float | None = None

    def raw(self, items: Sequence[tuple[str, Product, Evidence | None]]) -> list[str]:
        """The model's unchecked texts for (request, product, evidence) triples (for evaluation)."""
        convs = [[{"from": "human", "value": explain_prompt(r, p, e)}] for r, p, e in items]
        images = [_image_for(p, self.image_root) for _, p, _ in items]
        return self.generator.generate(convs, images)

    def explain_batch(self, items: Sequence[tuple[str, Product, Evidence | None]]) -> list[Rationale]:
        items = [(r, p, e if e is not None else gather_evidence(r, p)) for r, p, e in items]
        start = time.perf_counter()
        texts = self.raw(items)
        self.last_latency_s = (time.perf_counter() - start) / max(1, len(items))
        return [self._checked(text, r, p, e) for text, (r, p, e) in zip(texts, items)]

    def explain(self, request: str, product: Product, evidence: Evidence | None = None) -> Rationale:
        return self.explain_batch([(request, product, evidence)])[0]

    def _checked(self, text: str, request: str, product: Product, evidence: Evidence) -> Rationale:
        """The model's text through synth_data's one check-and-fallback path (`settle`)."""
        return settle(Rationale(text=text, facts_used=[], backend=self.backend), request, product, evidence, self.fallback)


def _factory(**kwargs: Any) -> LlavaExplainer:
    return LlavaExplainer(**kwargs)


if "llava" not in EXPLAINERS:
    register_explainer("llava", _factory)
