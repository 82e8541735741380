"""The `llava` explainer backend, by the name `whyrec explain` imports to register it (see `generate`)."""
from llava_tuning.generate import GenerationSettings, LlavaExplainer  # noqa: F401  (importing registers "llava")
