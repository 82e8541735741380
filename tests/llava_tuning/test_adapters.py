"""Adapters: saved, loaded onto a rebuilt base, merged; merged and unmerged models agree."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from llava_tuning.adapters import load_model, merge_adapter, model_kind
from llava_tuning.presets import create_model


def logits(bundle, image_rgb=(200, 30, 30)):
    enc = bundle.processor.encode([{"from": "human", "value": "<image>\nRequest: a red top\nWhy does it fit?"},
                                   {"from": "gpt", "value": "It is a red top."}])
    batch = bundle.processor.pad([enc])
    px = bundle.processor.pixel_values([Image.new("RGB", (48, 72), image_rgb)])
    with torch.no_grad():
        return bundle.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=px).logits


def test_adapter_changes_the_base_and_reloads(trained_adapter):
    assert model_kind(trained_adapter) == "adapter"
    assert model_kind(Path(trained_adapter).parent) == "adapter"  # a tune output dir resolves to its adapter
    tuned = load_model(trained_adapter)
    base = create_model("tiny-random")
    a, b = logits(tuned), logits(base)
    assert not torch.allclose(a, b, atol=1e-3)  # the adapter (and trained projector) do something
    again = load_model(Path(trained_adapter).parent)
    assert torch.equal(logits(again), a)


def test_merged_model_gives_the_same_logits(trained_adapter, tmp_path):
    unmerged = load_model(trained_adapter)
    out = merge_adapter(trained_adapter, tmp_path / "merged")
    assert model_kind(out) == "merged"
    assert not (out / "adapter_config.json").exists()
    meta = json.loads((out / "whyrec_model.json").read_text())
    assert meta["merged_from"] == str(Path(trained_adapter))
    merged = load_model(out)
    assert not hasattr(merged.model, "peft_config")  # a plain LlavaForConditionalGeneration
    for rgb in [(200, 30, 30), (30, 40, 200)]:
        torch.testing.assert_close(logits(merged, rgb), logits(unmerged, rgb), atol=1e-5, rtol=1e-4)


def test_merge_refuses_a_non_adapter(tmp_path):
    with pytest.raises(FileNotFoundError):
        merge_adapter(tmp_path, tmp_path / "out")


def test_merge_into_the_run_dir_twice(trained_adapter, tmp_path):
    """`whyrec tune merge RUN --out RUN/merged` may be repeated: the run dir then holds merged/ and
    adapter/, and merging still reads the adapter while loading the run picks the merged model."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(Path(trained_adapter).parent, run)
    merge_adapter(run, run / "merged")
    assert model_kind(run) == "merged"
    merge_adapter(run, run / "merged")
    assert json.loads((run / "merged" / "whyrec_model.json").read_text())["merged_from"] == str(run / "adapter")


def test_exported_adapter_is_small_fp16_and_loads_back(trained_adapter, tmp_path):
    """`whyrec tune export`: fp16 safetensors without run-local paths; loaded onto a rebuilt base it
    gives nearly the logits of the fp32 adapter."""
    from safetensors.torch import load_file

    from llava_tuning.adapters import export_adapter

    out = export_adapter(trained_adapter, tmp_path / "ship")
    assert sorted(f.name for f in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "whyrec_model.json"]
    state = load_file(str(out / "adapter_model.safetensors"))
    assert state and all(v.dtype == torch.float16 for v in state.values())
    assert any("multi_modal_projector" in k for k in state)  # the projector travels with the LoRA weights
    meta = json.loads((out / "whyrec_model.json").read_text())
    assert meta["init_projector"] == "" and meta["preset"]["cache_dir"] == "var/cache/models"
    shipped, original = logits(load_model(out)), logits(load_model(trained_adapter))
    assert not torch.equal(shipped, original)  # really rounded ...
    torch.testing.assert_close(shipped, original, atol=2e-2, rtol=1e-2)  # ... and still the same model
