"""The `synth:` config section (see configs/synth.yaml), read with retrieval.config.section."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval.config import load_yaml, section


@dataclass
class OpenAIConfig:
    """`synth.openai`: any OpenAI-compatible Chat Completions endpoint."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key: str | None = None  # prefer api_key_env; a key in a config file ends up in git
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.7
    max_tokens: int = 400
    timeout_s: float = 60.0
    max_retries: int = 5  # on 429, 5xx, timeouts and dropped connections
    backoff_s: float = 1.0  # first wait; doubles each retry (with jitter), capped at backoff_max_s
    backoff_max_s: float = 30.0
    concurrency: int = 4  # requests in flight at once
    cache_dir: str = "var/synth/cache"  # answers keyed by a hash of the request: a rerun sends nothing
    send_images: bool = True
    image_max_side: int = 512  # images are downscaled before base64 to save tokens (0: send as is)
    json_mode: bool = True  # response_format={"type": "json_object"}; off for servers without it

    def __post_init__(self):
        if self.concurrency < 1:
            raise ValueError("synth.openai.concurrency must be at least 1")
        if self.max_retries < 0:
            raise ValueError("synth.openai.max_retries must be >= 0")


@dataclass
class SynthConfig:
    """`synth:` how much instruction data, of which kinds, from which catalog, with which backend."""

    catalog: str = "var/hm/catalog"
    out: str = "var/synth/data"
    backend: str = "template"  # template | openai
    n: int = 1000  # accepted examples wanted
    seed: int = 0
    val_fraction: float = 0.1  # by product group (group_id), so variants never straddle the split
    heldout_fraction: float = 0.0  # product groups kept out of the data altogether (for evaluation, see eval/explain_eval.py)
    thin_fraction: float = 0.0  # of rationales and colour/picture questions: title-only prompts, the picture carries the facts
    kinds: dict[str, float] = field(default_factory=lambda: {"rationale": 0.4, "question": 0.3, "comparison": 0.15, "description": 0.15})
    question_types: dict[str, float] = field(default_factory=lambda: {
        "colour": 1.0, "material": 1.0, "fit": 1.0, "occasion": 1.0, "care": 0.6, "picture": 1.0, "unanswerable": 1.0})
    hard_negative_fraction: float = 0.35  # of rationales: an item retrieved for the request that does not fit it
    candidates: str = "attribute"  # attribute (vocabulary match, no index) | search (retrieval.search.Searcher)
    candidates_k: int = 20
    require_image: bool = True
    pair_images: bool = True  # comparisons get a side-by-side image (A left, B right) under out/images
    max_attempts_factor: float = 2.0  # stop after n * factor + 10 tasks even if rejects left fewer than n
    batch_size: int = 64
    reject_examples: int = 20  # how many rejected examples the report keeps
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)

    def __post_init__(self):
        if self.backend not in ("template", "openai"):
            raise ValueError(f"synth.backend must be template or openai, not {self.backend!r}")
        if self.candidates not in ("attribute", "search"):
            raise ValueError(f"synth.candidates must be attribute or search, not {self.candidates!r}")
        if self.n < 1:
            raise ValueError("synth.n must be at least 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("synth.val_fraction must lie in [0, 1)")
        if not 0.0 <= self.heldout_fraction < 1.0 - self.val_fraction:
            raise ValueError("synth.heldout_fraction must lie in [0, 1 - val_fraction)")
        if not 0.0 <= self.thin_fraction <= 1.0:
            raise ValueError("synth.thin_fraction must lie in [0, 1]")
        if isinstance(self.openai, dict):
            from retrieval.config import from_dict

            self.openai = from_dict(OpenAIConfig, self.openai, "synth.openai")


def load_config(config: dict[str, Any] | str | Path | None = None, **overrides: Any) -> SynthConfig:
    """The synth section of a config file (or dict), with non-None overrides; `openai_*` overrides
    go to the openai subsection (openai_model="..." sets synth.openai.model)."""
    oa = {k[len("openai_"):]: v for k, v in overrides.items() if k.startswith("openai_") and v is not None}
    rest = {k: v for k, v in overrides.items() if not k.startswith("openai_")}
    if not isinstance(config, dict):
        config = load_yaml(config)
    if rest.get("catalog") is None and "catalog" not in (config.get("synth") or {}) and (config.get("catalog") or {}).get("dir"):
        rest["catalog"] = config["catalog"]["dir"]  # the file's catalog: section (configs/hm.yaml)
    cfg = section(config, "synth", SynthConfig, **rest)
    if oa:
        from dataclasses import replace

        cfg.openai = replace(cfg.openai, **oa)
    return cfg
