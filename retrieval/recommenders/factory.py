"""One factory for every recommender, from config data.

A `recommend:` config section names its models (name -> spec with a `kind`) and which one the
service serves (`model`). Hybrids and the ranker name other models of the same section, so the
served configuration and the one `whyrec eval rec` measures are the same objects built by the same
code from the same YAML.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from retrieval.config import from_dict
from retrieval.recommenders.context import ModelContext
from retrieval.recommenders.models import ALS, BPR, Content, Hybrid, Popularity, Recommender, Repeat, TfidfKNN
from retrieval.recommenders.others import OtherColours
from retrieval.recommenders.ranker import Ranker, RankerParams

log = logging.getLogger(__name__)

DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    "popularity": {"kind": "popularity"},
    "pop_recent": {"kind": "popularity", "window_days": 7},
    "repeat": {"kind": "repeat"},
    "other_colours": {"kind": "other_colours"},
    "tfidf": {"kind": "tfidf"},
    "als": {"kind": "als"},
    "bpr": {"kind": "bpr"},
    "content": {"kind": "content"},
    "hybrid": {"kind": "hybrid", "weights": {"repeat": 1.0, "tfidf": 0.1, "als": 0.03, "pop_recent": 0.03}},
    "ranker": {"kind": "ranker",
               "candidates": {"repeat": 30, "other_colours": 30, "tfidf": 60, "content": 60, "pop_recent": 60, "als": 40},
               "windows": 4, "lgbm": {"num_leaves": 15, "min_child_samples": 50}},
}
SIMPLE_KINDS = ("popularity", "repeat", "other_colours", "tfidf", "als", "bpr", "content")
KINDS = SIMPLE_KINDS + ("hybrid", "ranker")


@dataclass
class RecommendConfig:
    """`recommend:` section: the models and the one the service serves."""

    model: str = "ranker"  # the served model (a name in `models`)
    exclude_bought: bool = False  # default of the per-request flag: fashion shoppers re-buy
    item_vectors: str | None = "index"  # content vectors: index | towers | FILE.npy | null (no content model)
    cache_dir: str = "var/cache/features"  # tower feature cache (item_vectors: towers, image features)
    image_features: bool = False  # ranker: photo similarity from the cached image tower
    merge_same_day: bool = True  # several units of one item on one day are one purchase
    # the service restores the fit `whyrec index fit-recommender` saved beside the index; without a
    # matching one it fits at start-up up to this many items, and above it refuses to start (null: no limit)
    fit_at_start_max_items: int | None = 100_000
    models: dict[str, dict] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_MODELS.items()})
    goes_with: dict = field(default_factory=dict)  # retrieval.recommenders.complement.GoesWithConfig

    def __post_init__(self):
        if self.model not in self.models:
            raise ValueError(f"recommend.model {self.model!r} is not among recommend.models {sorted(self.models)}")
        for name, spec in self.models.items():
            if not isinstance(spec, dict) or spec.get("kind", name) not in KINDS:
                raise ValueError(f"recommend.models.{name}: kind must be one of {KINDS}")


def needs_vectors(specs: dict[str, dict], name: str, seen: frozenset = frozenset()) -> bool:
    """Whether building model `name` needs item vectors (a content model somewhere in it)."""
    spec = specs[name]
    kind = spec.get("kind", name)
    if kind == "content":
        return True
    if name in seen:
        raise ValueError(f"model {name!r} refers to itself")
    refs = list(spec.get("weights", {})) if kind == "hybrid" else list(spec.get("candidates", {})) if kind == "ranker" else []
    return any(needs_vectors(specs, r, seen | {name}) for r in refs if r in specs)


def drop_unbuildable(specs: dict[str, dict], ctx: ModelContext) -> dict[str, dict]:
    """Without item vectors, content models go, and hybrids/rankers lose them as components."""
    if ctx.item_vectors is not None:
        return specs
    out = {}
    content = {n for n, s in specs.items() if s.get("kind", n) == "content"}
    for name, spec in specs.items():
        if name in content:
            continue
        spec = dict(spec)
        for key in ("weights", "candidates"):
            if key in spec:
                spec[key] = {k: v for k, v in spec[key].items() if k not in content}
        out[name] = spec
    if content:
        log.warning("no item vectors: content model(s) %s left out", sorted(content))
    return out


def create_recommender(name: str, specs: dict[str, dict], ctx: ModelContext, _seen: frozenset = frozenset()) -> Recommender:
    """Model `name` of `specs` (a `recommend.models` mapping), unfitted; references built recursively."""
    if name not in specs:
        raise ValueError(f"unknown model {name!r}; the config has {sorted(specs)}")
    if name in _seen:
        raise ValueError(f"model {name!r} refers to itself")
    spec = dict(specs[name])
    kind = spec.pop("kind", name)
    sub = lambda n: create_recommender(n, specs, ctx, _seen | {name})  # noqa: E731
    factories: dict[str, Callable[..., Recommender]] = {
        "popularity": lambda **p: Popularity(**p),
        "repeat": lambda **p: Repeat(**p),
        "other_colours": lambda **p: OtherColours(_need(ctx.groups, "groups"), **p),
        "tfidf": lambda **p: TfidfKNN(ctx.texts, **p),
        "als": lambda **p: ALS(**p),
        "bpr": lambda **p: BPR(**p),
        "content": lambda **p: Content(_need(ctx.item_vectors, "item vectors (recommend.item_vectors)"), **p),
        "hybrid": lambda weights, **p: Hybrid({n: sub(n) for n in weights}, dict(weights), **p),
        "ranker": lambda candidates, lgbm=None, **p: Ranker(ctx, {n: sub(n) for n in candidates}, dict(candidates),
                                                            params=from_dict(RankerParams, lgbm, f"{name}.lgbm"), **p),
    }
    if kind not in factories:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {sorted(factories)}")
    try:
        return factories[kind](**spec)
    except TypeError as err:
        raise ValueError(f"bad parameters for model {name} ({kind}): {err}") from None


def _need(value, what: str):
    if value is None:
        raise ValueError(f"this model needs {what}")
    return value
