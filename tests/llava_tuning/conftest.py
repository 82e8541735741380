"""Fixtures for llava_tuning: a handful of LLaVA conversation records over small solid-colour
photos (the answer names the colour, so a model that sees the image can learn it)."""
from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

COLOURS = {"red": (200, 30, 30), "blue": (30, 40, 200), "green": (30, 160, 60), "black": (10, 10, 10)}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def make_records(folder, n_per_colour: int = 2) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for colour, rgb in COLOURS.items():
        for k in range(n_per_colour):
            path = folder / f"{colour}{k}.jpg"
            Image.new("RGB", (48, 72), rgb).save(path)
            item = f"{colour}-{k}"
            records.append({
                "id": f"{item}-desc", "image": str(path), "item_id": item, "kind": "description",
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe the item."},
                    {"from": "gpt", "value": f"A {colour} top."},
                ],
            })
            records.append({
                "id": f"{item}-why", "image": str(path), "item_id": item, "kind": "explain",
                "conversations": [
                    {"from": "human", "value": f"<image>\nRequest: a {colour} top\nWhy does it fit?"},
                    {"from": "gpt", "value": f"It is a {colour} top."},
                ],
            })
    return records


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def records(tmp_path):
    return make_records(tmp_path / "images")


@pytest.fixture
def data_file(tmp_path, records):
    return write_jsonl(tmp_path / "train.jsonl", records)


def tune_config(tmp_path, data: str, **kw):
    """A small tiny-random TuneConfig writing under tmp_path (MLflow off unless asked)."""
    from llava_tuning.train import TuneConfig

    base = dict(preset="tiny-random", data=data, eval_data=data, output_dir=str(tmp_path / "out"), max_steps=20,
                batch_size=4, lr=3e-3, warmup_steps=2, eval_every=10, save_every=0, log_every=5, mlflow_uri="",
                mixed_precision="no", max_length=256)
    base.update(kw)
    return TuneConfig(**base)


@pytest.fixture(scope="session")
def trained_adapter(tmp_path_factory) -> str:
    """A tiny-random LoRA adapter trained for a few steps (shared by adapter/generation tests)."""
    from llava_tuning.train import tune

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("adapter")
    data = write_jsonl(root / "train.jsonl", make_records(root / "images"))
    res = tune(tune_config(root, data, max_steps=15))
    return res["lora"].output_dir
