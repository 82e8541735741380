"""Text + image processing for LLaVA: chat formatting, `<image>` expansion, loss masks, padding.

One processor serves every preset: a tokenizer (which knows the `<image>` token), an image
transform (EfficientNet's for tiny-offline, the checkpoint's CLIP processor for llava-1.5) and a
chat format. Conversations are tokenised turn by turn so that the loss mask is exact: only the
assistant's words and its end-of-turn token carry labels; the system prompt, every human turn,
the role headers and the image tokens are -100.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"
PROCESSOR_FILE = "whyrec_processor.json"


@dataclass(frozen=True)
class ChatFormat:
    """How a conversation becomes text. `{}` in a template is the turn's content."""

    system_template: str
    user_template: str
    assistant_prefix: str
    assistant_end: str  # trained: the model must learn to stop
    turn_separator: str  # after the assistant's end token; not trained
    default_system: str
    add_bos: bool = False


CHAT_FORMATS: dict[str, ChatFormat] = {
    # SmolLM2-Instruct, Qwen and most small chat models
    "chatml": ChatFormat(
        system_template="<|im_start|>system\n{}<|im_end|>\n",
        user_template="<|im_start|>user\n{}<|im_end|>\n",
        assistant_prefix="<|im_start|>assistant\n",
        assistant_end="<|im_end|>",
        turn_separator="\n",
        default_system="You are a shopping assistant. You say why a product fits a request, using only the product's facts.",
    ),
    # LLaVA-1.5 (Vicuna v1 conversation style)
    "llava-v1": ChatFormat(
        system_template="{} ",
        user_template="USER: {} ",
        assistant_prefix="ASSISTANT:",
        assistant_end="</s>",
        turn_separator="",
        default_system="A chat between a curious human and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the human's questions.",
        add_bos=True,
    ),
}

HUMAN_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant"}


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_labels(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


class ChatProcessor:
    """Tokenizer + image transform + chat format, with `save_pretrained`/`from_pretrained`."""

    def __init__(self, tokenizer, image_processor, num_image_tokens: int, chat_format: str = "chatml",
                 system_prompt: str | None = None, image_token: str = IMAGE_TOKEN):
        if chat_format not in CHAT_FORMATS:
            raise ValueError(f"unknown chat format {chat_format!r}; known: {sorted(CHAT_FORMATS)}")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.num_image_tokens = int(num_image_tokens)
        self.chat_format = chat_format
        self.format = CHAT_FORMATS[chat_format]
        self.system_prompt = self.format.default_system if system_prompt is None else system_prompt
        self.image_token = image_token
        if image_token not in tokenizer.get_vocab():
            tokenizer.add_tokens([image_token], special_tokens=True)
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_token_id = tokenizer.pad_token_id
        self.end_token_ids = self._ids(self.format.assistant_end)

    # ----------------------------------------------------------------- text
    def _ids(self, text: str) -> list[int]:
        """Token ids of `text` with every `<image>` expanded to the vision tower's patch count."""
        out: list[int] = []
        for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]:
            out.extend([i] * self.num_image_tokens if i == self.image_token_id else [i])
        return out

    def encode(self, conversations: Sequence[dict], add_generation_prompt: bool = False) -> Encoded:
        """Token ids and labels of a LLaVA conversation ([{"from": "human"|"gpt", "value": ...}, ...]).

        With `add_generation_prompt` the assistant header is appended (for generation; a trailing
        assistant turn, if any, is dropped)."""
        fmt = self.format
        turns = list(conversations)
        if add_generation_prompt and turns and turns[-1].get("from") in ASSISTANT_ROLES:
            turns = turns[:-1]
        ids: list[int] = []
        labels: list[int] = []

        def add(text: str, train: bool) -> None:
            part = self._ids(text)
            ids.extend(part)
            labels.extend(part if train else [IGNORE_INDEX] * len(part))

        if fmt.add_bos and self.tokenizer.bos_token_id is not None:
            ids.append(self.tokenizer.bos_token_id)
            labels.append(IGNORE_INDEX)
        system = self.system_prompt
        if turns and turns[0].get("from") == "system":
            system = turns.pop(0)["value"]
        if system:
            add(fmt.system_template.format(system), False)
        for turn in turns:
            role, value = turn.get("from"), turn.get("value")
            if not isinstance(value, str):
                raise ValueError(f"conversation turn without a text value: {turn!r}")
            if role in HUMAN_ROLES:
                add(fmt.user_template.format(value), False)
            elif role in ASSISTANT_ROLES:
                if self.image_token in value:
                    raise ValueError("an assistant turn may not contain the <image> token")
                add(fmt.assistant_prefix, False)
                add(value.strip() + fmt.assistant_end, True)
                add(fmt.turn_separator, False)
            else:
                raise ValueError(f"unknown conversation role {role!r} (use human/gpt)")
        if add_generation_prompt:
            add(fmt.assistant_prefix, False)
        # an image token is never a target, wherever it stands
        labels = [IGNORE_INDEX if i == self.image_token_id else lab for i, lab in zip(ids, labels)]
        return Encoded(ids, labels)

    def count_images(self, ids: Sequence[int]) -> int:
        n = sum(1 for i in ids if i == self.image_token_id)
        if n % self.num_image_tokens:
            raise ValueError(f"{n} image tokens is not a whole number of images of {self.num_image_tokens} tokens")
        return n // self.num_image_tokens

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    # ----------------------------------------------------------------- batches
    def pixel_values(self, images) -> torch.Tensor:
        return self.image_processor(list(images), return_tensors="pt")["pixel_values"]

    def pad(self, encoded: Sequence[Encoded], padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Pad to the longest sequence: input_ids (pad id), attention_mask, labels (-100)."""
        longest = max(len(e.input_ids) for e in encoded)
        ids = torch.full((len(encoded), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), longest), dtype=torch.long)
        labels = torch.full((len(encoded), longest), IGNORE_INDEX, dtype=torch.long)
        for row, e in enumerate(encoded):
            n = len(e.input_ids)
            cols = slice(0, n) if padding_side == "right" else slice(longest - n, longest)
            ids[row, cols] = torch.tensor(e.input_ids)
            mask[row, cols] = 1
            labels[row, cols] = torch.tensor(e.labels)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    # ----------------------------------------------------------------- storage
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        if hasattr(self.image_processor, "to_dict") and not hasattr(self.image_processor, "save_pretrained"):
            image = self.image_processor.to_dict()
        else:
            self.image_processor.save_pretrained(directory)
            image = {"type": "auto"}
        meta = {"num_image_tokens": self.num_image_tokens, "chat_format": self.chat_format,
                "system_prompt": self.system_prompt, "image_token": self.image_token, "image_processor": image}
        (directory / PROCESSOR_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "ChatProcessor":
        from transformers import AutoTokenizer

        directory = Path(directory)
        path = directory / PROCESSOR_FILE
        if not path.exists():
            raise FileNotFoundError(f"no {PROCESSOR_FILE} in {directory}: not a whyrec LLaVA model directory")
        meta = json.loads(path.read_text())
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        image = meta.pop("image_processor")
        if image.get("type") == "efficientnet":
            from llava_tuning.vision import EfficientNetImageProcessor

            image_processor = EfficientNetImageProcessor(image["image_size"])
        else:
            from transformers import AutoImageProcessor

            image_processor = AutoImageProcessor.from_pretrained(str(directory))
        return cls(tokenizer, image_processor, **meta)

    def describe(self) -> dict:
        return {"chat_format": asdict(self.format), "num_image_tokens": self.num_image_tokens, "image_token_id": self.image_token_id}
