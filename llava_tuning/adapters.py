"""Load what training wrote (a LoRA adapter, a stage-1 projector, or a merged model) and merge adapters.

Every output directory carries `whyrec_model.json` with the preset it was trained on, so the base
can be rebuilt exactly (`create_model(preset)`) before the adapter goes on top. Merging folds the
LoRA deltas into the base weights (`merge_and_unload`) and saves a plain
`LlavaForConditionalGeneration` with its processor: no peft needed to serve it. A 4-bit base is
merged in its unquantised form (merging into NF4 weights would round the deltas away).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from retrieval.artifacts import atomic_dir

log = logging.getLogger(__name__)


def _meta(directory: Path) -> dict:
    from llava_tuning.presets import MODEL_FILE

    path = directory / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory} has no {MODEL_FILE}: not written by `whyrec tune`")
    return json.loads(path.read_text())


def model_kind(path: str | Path) -> str:
    """'adapter', 'projector', 'merged' or 'preset' (a preset name or YAML file)."""
    from llava_tuning.train import PROJECTOR_FILE

    p = Path(path)
    if p.is_dir():
        if (p / "adapter_config.json").exists():
            return "adapter"
        if (p / PROJECTOR_FILE).exists():
            return "projector"
        if (p / "config.json").exists():
            return "merged"
        for sub in ("merged", "adapter", "projector"):  # a training output dir
            if (p / sub).is_dir():
                return model_kind(p / sub)
        raise FileNotFoundError(f"{p} holds no adapter, projector or model")
    if p.suffix in (".yaml", ".yml") and not p.exists():
        raise FileNotFoundError(f"model config {p} not found")
    return "preset"


def _resolve(path: Path, order: tuple[str, ...] = ("merged", "adapter", "projector")) -> Path:
    """A tune output dir stands for its merged model, else its adapter, else its stage-1 projector."""
    if path.is_dir() and not any((path / f).exists() for f in ("adapter_config.json", "config.json", "projector.safetensors")):
        for sub in order:
            if (path / sub).is_dir():
                return path / sub
    return path


def load_model(path: str | Path = "tiny-offline", **overrides: Any):
    """A LlavaBundle from a preset name/YAML, a stage-1 projector dir, a LoRA adapter dir (rebuilt
    base + adapter, unmerged) or a merged model dir. `overrides` adjust the preset (e.g. cache_dir)."""
    import torch

    from llava_tuning.presets import LlavaBundle, create_model, get_preset

    kind = model_kind(path)
    if kind == "preset":
        return create_model(path, **overrides)
    p = _resolve(Path(path))
    meta = _meta(p)
    if kind == "projector":
        from llava_tuning.train import load_projector

        bundle = create_model(meta["preset"], **overrides)
        load_projector(bundle.model, p)
        return bundle
    if kind == "adapter":
        from peft import PeftModel

        bundle = create_model(meta["preset"], **overrides)
        if meta.get("init_projector") and not (p / "adapter_config.json").read_text().count("multi_modal_projector"):
            from llava_tuning.train import load_projector

            load_projector(bundle.model, meta["init_projector"])  # projector trained in stage 1 only
        bundle.model = PeftModel.from_pretrained(bundle.model, str(p), is_trainable=False).eval()
        return bundle
    # merged: a plain LLaVA directory with its processor
    import llava_tuning.vision  # noqa: F401  (the EfficientNet tower must be registered before loading)
    from transformers import LlavaForConditionalGeneration

    from llava_tuning.processor import ChatProcessor

    preset = get_preset(meta["preset"], **overrides)
    dtype = torch.float32 if not torch.cuda.is_available() else getattr(torch, preset.compute_dtype)
    model = LlavaForConditionalGeneration.from_pretrained(str(p), dtype=dtype).eval()
    if torch.cuda.is_available():
        model = model.to("cuda")
    return LlavaBundle(model, ChatProcessor.from_pretrained(p), preset)


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, **overrides: Any) -> Path:
    """Fold a LoRA adapter into its base and save a standalone model (+ processor) in `out_dir`."""
    import torch

    from llava_tuning.presets import MODEL_FILE

    adapter_dir = _resolve(Path(adapter_dir), order=("adapter",))
    if model_kind(adapter_dir) != "adapter":
        raise ValueError(f"{adapter_dir} is not a LoRA adapter directory (no adapter_config.json)")
    meta = _meta(adapter_dir)
    if meta["preset"].get("quantization") == "nf4":
        overrides.setdefault("quantization", "none")  # merge into full-precision weights, never into NF4
    bundle = load_model(adapter_dir, **overrides)
    merged = bundle.model.merge_and_unload()
    out = Path(out_dir)
    if bundle.preset.quantization == "none" and merged.dtype != torch.float32 and not torch.cuda.is_available():
        merged = merged.float()
    with atomic_dir(out) as tmp:
        merged.save_pretrained(str(tmp))
        bundle.processor.save_pretrained(tmp)
        (tmp / MODEL_FILE).write_text(json.dumps({**meta, "preset": {**meta["preset"], **overrides}, "merged_from": str(adapter_dir)}, indent=2))
    log.info("merged %s into %s", adapter_dir, out)
    return out


def export_adapter(adapter_dir: str | Path, out_dir: str | Path, dtype: str = "float16", notes: dict | None = None) -> Path:
    """Copy a trained adapter (LoRA + the projector it trains in full) to a small shippable folder:
    safetensors in `dtype`, and the preset with run-local paths dropped (the model cache goes back to
    the preset default, so a fresh clone assembles its base there from the packaged weights)."""
    import torch
    from safetensors.torch import load_file, save_file

    from llava_tuning.presets import MODEL_FILE, ModelPreset

    src = _resolve(Path(adapter_dir), order=("adapter",))
    if model_kind(src) != "adapter":
        raise ValueError(f"{src} is not a LoRA adapter directory (no adapter_config.json)")
    config = json.loads((src / "adapter_config.json").read_text())
    meta = _meta(src)
    if not config.get("modules_to_save") and meta.get("init_projector"):
        raise ValueError(f"{src}: its projector lives in {meta['init_projector']}, not in the adapter; export needs both in one place")
    state = load_file(str(src / "adapter_model.safetensors"))
    cast = getattr(torch, dtype)
    state = {k: (v.to(cast) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    preset = {**meta["preset"], "cache_dir": ModelPreset.__dataclass_fields__["cache_dir"].default}
    with atomic_dir(Path(out_dir)) as tmp:
        save_file(state, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
        (tmp / MODEL_FILE).write_text(json.dumps({"preset": preset, "stage": meta.get("stage", "lora"), "init_projector": "",
                                                  "data": meta.get("data"), "exported_from": str(src), "dtype": dtype,
                                                  **(notes or {})}, indent=2))
    log.info("exported %s to %s (%s)", src, out_dir, dtype)
    return Path(out_dir)
