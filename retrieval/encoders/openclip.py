"""`openclip`: any open_clip architecture, with a pretrained tag or a local checkpoint file.

Users with CLIP weights (often their own fine-tuned CLIP) point `encoder.model` at the architecture
and `encoder.pretrained` at a tag or a file. Tags download from a hub, which this offline machine
cannot do; a local file always works. Tests build a tiny random config of the same classes.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from retrieval.encoders.base import l2_normalise
from retrieval.encoders.towers import open_image

log = logging.getLogger(__name__)


class OpenClipEncoder:
    name = "openclip"

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = None, model_config: dict | None = None,
                 batch_size: int = 32, threads: int = 2):
        import open_clip

        self.threads = threads
        self.batch_size = batch_size
        if model_config:  # an architecture given inline (tests: a tiny random one)
            open_clip.factory._MODEL_CONFIGS[model] = model_config
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained or None)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self.tokenizer(["probe"])).shape[-1])
        self.name = f"openclip:{model}:{pretrained or 'random'}"

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        torch.set_num_threads(self.threads)
        out = []
        for i in tqdm(range(0, len(texts), self.batch_size), desc="openclip text", disable=len(texts) <= self.batch_size):
            out.append(self.model.encode_text(self.tokenizer(list(texts[i : i + self.batch_size]))).float().numpy())
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    @torch.inference_mode()
    def encode_image(self, images: Sequence) -> np.ndarray:
        torch.set_num_threads(self.threads)
        out = []
        for i in tqdm(range(0, len(images), self.batch_size), desc="openclip images", disable=len(images) <= self.batch_size):
            batch = torch.stack([self.preprocess(open_image(im)) for im in images[i : i + self.batch_size]])
            out.append(self.model.encode_image(batch).float().numpy())
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)
