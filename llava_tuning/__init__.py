"""LLaVA-architecture rationales for whyrec: model presets, LoRA tuning, merging, generation.

- `presets`: `create_model(preset)` for `tiny-offline` (EfficientNet-Lite0 + projector + SmolLM2-135M,
  all from packages, runs on a CPU), `llava-1.5-7b` (4-bit QLoRA on CUDA) and `tiny-random` (tests).
- `train`: stage 1 (projector) and stage 2 (LoRA + projector) with `accelerate`; loss on the
  assistant's tokens only; checkpoints, resume, eval loss, MLflow.
- `adapters`: load an adapter onto its rebuilt base, `merge_adapter` into a standalone model.
- `generate`: batched decoding and `LlavaExplainer`, registered as the `llava` explainer backend.
CLI: `whyrec tune ...`, `whyrec tune merge ...`, `whyrec explain ... --backend llava`.
Heavy imports live inside the modules, so importing this package (and `whyrec --help`) stays cheap.
"""


def _register_backend() -> None:
    """Register the `llava` explainer with synth_data at package import (cheap: the model loads only
    when an explainer is built), so `get_explainer("llava", ...)` works after `import llava_tuning`."""
    try:
        from synth_data.explain import EXPLAINERS, register_explainer
    except ImportError:  # synth_data is a lower layer and always present; keep the CLI alive regardless
        return

    def factory(**kwargs):
        from llava_tuning.generate import LlavaExplainer

        return LlavaExplainer(**kwargs)

    if "llava" not in EXPLAINERS:
        register_explainer("llava", factory)


_register_backend()
