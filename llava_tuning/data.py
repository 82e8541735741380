"""LLaVA conversation records (JSONL) -> tokenised examples -> padded batches, and the masked loss.

A record: {"id", "image" (absolute path), "item_id", "kind", "conversations": [{"from": "human",
"value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]} (the shared contract in HELPERS.md).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

import torch
from PIL import Image

from llava_tuning.processor import IGNORE_INDEX, ChatProcessor, Encoded

log = logging.getLogger(__name__)


def validate_record(rec: object, where: str) -> dict:
    """Check one record's shape; raise ValueError naming the line and the problem."""
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: a record must be a JSON object")
    for key in ("id", "image", "conversations"):
        if key not in rec:
            raise ValueError(f"{where}: record lacks {key!r}")
    conv = rec["conversations"]
    if not isinstance(conv, list) or len(conv) < 2:
        raise ValueError(f"{where}: conversations must be a list of at least two turns")
    for turn in conv:
        if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt", "user", "assistant", "system") or not isinstance(turn.get("value"), str):
            raise ValueError(f"{where}: bad turn {turn!r} (need from=human|gpt and a text value)")
    if not any(t["from"] in ("gpt", "assistant") for t in conv):
        raise ValueError(f"{where}: no assistant (gpt) turn to learn from")
    n_images = sum(t["value"].count("<image>") for t in conv)
    if n_images != 1:
        raise ValueError(f"{where}: expected exactly one <image> token, found {n_images}")
    return rec


def read_records(path: str | Path, limit: int | None = None, kinds: Iterable[str] | None = None) -> list[dict]:
    """Records of a JSONL file (validated), optionally only some kinds, at most `limit`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training data {path} not found")
    kinds = set(kinds) if kinds else None
    out: list[dict] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not JSON ({err.msg})") from None
            rec = validate_record(rec, f"{path}:{n}")
            if kinds and rec.get("kind") not in kinds:
                continue
            out.append(rec)
            if limit and len(out) >= limit:
                break
    if not out:
        raise ValueError(f"{path}: no usable records" + (f" of kinds {sorted(kinds)}" if kinds else ""))
    return out


def load_image(path: str | Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


class ConversationDataset(torch.utils.data.Dataset):
    """Tokenised once up front (cheap next to a training step); images are read on access."""

    def __init__(self, records: Sequence[dict], processor: ChatProcessor, max_length: int = 512):
        self.records = []
        self.encoded: list[Encoded] = []
        image_end = processor.num_image_tokens
        dropped = 0
        for rec in records:
            enc = processor.encode(rec["conversations"])
            if len(enc.input_ids) > max_length:
                last_image = max(i for i, t in enumerate(enc.input_ids) if t == processor.image_token_id)
                if last_image >= max_length:
                    raise ValueError(f"record {rec['id']}: max_length {max_length} cuts into the {image_end} image tokens")
                enc = Encoded(enc.input_ids[:max_length], enc.labels[:max_length])
            if enc.n_labels == 0:
                dropped += 1
                continue
            self.records.append(rec)
            self.encoded.append(enc)
        if dropped:
            log.warning("dropped %d records with no answer tokens left after truncation to %d", dropped, max_length)
        if not self.records:
            raise ValueError("no training examples left (all truncated away?)")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        path = Path(rec["image"])
        if not path.exists():
            raise FileNotFoundError(f"record {rec['id']}: image {path} not found")
        return {"encoded": self.encoded[i], "image": load_image(path)}

    def token_stats(self) -> dict[str, float]:
        lengths = [len(e.input_ids) for e in self.encoded]
        labels = [e.n_labels for e in self.encoded]
        return {"examples": len(lengths), "mean_tokens": sum(lengths) / len(lengths), "max_tokens": max(lengths),
                "mean_answer_tokens": sum(labels) / len(labels)}


class Collator:
    """Pads a list of dataset items into a batch (right padding) with pixel values."""

    def __init__(self, processor: ChatProcessor):
        self.processor = processor

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = self.processor.pad([it["encoded"] for it in items], padding_side="right")
        batch["pixel_values"] = self.processor.pixel_values([it["image"] for it in items])
        return batch


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: positions whose *next* token is a target. Only there are logits computed."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def masked_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the assistant tokens only, and their count.

    The language-model head runs only at the positions that predict a target token
    (`logits_to_keep` with a boolean mask), which on short answers skips most of the
    49k-way vocabulary projection."""
    labels = batch["labels"]
    keep = answer_positions(labels)
    n = int(keep.sum())
    if n == 0:
        return torch.zeros((), device=labels.device, requires_grad=True), 0
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"],
                logits_to_keep=keep, use_cache=False)
    logits = out.logits.reshape(-1, out.logits.shape[-1]).float()
    targets = labels[:, 1:][keep[:, :-1]]
    loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    return loss, n
