"""Dependencies the routes share: the settings, and the loaded `Engine` (searcher + explainer +
explanation cache) behind a holder that /admin/reload swaps atomically.

A request takes the engine once, at its start (`Depends(get_engine)`), and uses that object to
the end, so a reload never pulls the index out from under a request in flight: the old engine
lives on until its last request lets go of it.
"""
from __future__ import annotations

import ctypes
import gc
import importlib
import importlib.util
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from fastapi import Depends, HTTPException, Request

from api.settings import Settings
from retrieval.config import load_yaml
from retrieval.lru import LRUCache

log = logging.getLogger(__name__)


def build_searcher(settings: Settings, previous=None):
    """The retrieval spine, from the same YAML the settings came from (`previous`: the searcher a
    reload replaces; what is unchanged is taken over from it, see `Searcher.from_config`)."""
    from retrieval.search import Searcher

    if settings.config is None:
        raise ValueError("no config file: pass --config or set WHYREC_CONFIG (the searcher needs catalog/encoder/index sections)")
    cfg = load_yaml(settings.config)
    # one thread count for the serving process: torch (encoder) and faiss share OpenMP, and flipping
    # it between them on every request costs more than it saves (DESIGN.md)
    cfg["encoder"] = {**(cfg.get("encoder") or {}), "threads": settings.threads}
    index = dict(cfg.get("index") or {})
    index["params"] = {**(index.get("params") or {}), "threads": settings.threads}
    cfg["index"] = index
    return Searcher.from_config(cfg, previous)


def build_category_head(settings: Settings, searcher):
    """The config's category head (encoder.category_head), if it fits the searcher's encoder."""
    from retrieval.category_head import load_for_config

    head = load_for_config(settings.config) if settings.config else None
    if head is not None and head.dim != searcher.encoder.dim:
        log.warning("category head is %d-d but the encoder %d-d (retrain it with `whyrec encoder category`); predicted categories are off",
                    head.dim, searcher.encoder.dim)
        return None
    return head


# explainer backends that live in higher-layer packages: name -> module that registers it when imported
PLUGINS = {"llava": "llava_tuning.generate"}


def build_explainer(name: str, settings: Settings):
    """An explanation backend by name, from synth_data's registry (llava registers itself there)."""
    from synth_data.explain import EXPLAINERS, get_explainer

    if name not in EXPLAINERS and name in PLUGINS:
        importlib.import_module(PLUGINS[name])  # heavy (torch, transformers): only when asked for
    options = dict(settings.explainer_options) if name == settings.explainer else {}
    if name == "llava":  # serving: the offline item texts beside the index, the live budget and the generation gate
        from llava_tuning.describe import item_text_path  # the one place that names the cache file

        options.setdefault("item_text", str(item_text_path(settings.config)) if settings.config else None)
        options.setdefault("live_items", settings.llava_live_items)
        options.setdefault("concurrency", settings.llava_concurrency)
        options.setdefault("threads", settings.threads)
    return get_explainer(name, **options)


def available_explainers() -> list[str]:
    """Registered backends plus installed plugins (found without importing them)."""
    from synth_data.explain import EXPLAINERS

    names = set(EXPLAINERS)
    for name, module in PLUGINS.items():
        try:
            if importlib.util.find_spec(module) is not None:
                names.add(name)
        except ModuleNotFoundError:
            pass
    return sorted(names)


@dataclass
class Engine:
    """Everything one generation of the service answers with; replaced whole on reload."""

    searcher: Any
    explainer: Any
    explainer_name: str
    cache: LRUCache
    generation: int
    recommender: Any = None  # retrieval.recommenders.serve.ServedRecommender (the `recommend:` section's model)
    goes_with: Any = None  # retrieval.recommenders.complement.GoesWith, or None (no co-occurrence data)
    loaded_at: float = field(default_factory=time.time)
    category_head: Any = None  # retrieval.category_head.CategoryHead for /search/image, when the config names one
    goes_with_sets: Any = None  # file_stamp of goes-with's sets file (a reload rebuilds goes-with when it changed)
    _others: dict[str, Any] = field(default_factory=dict)
    _others_lock: threading.Lock = field(default_factory=threading.Lock)
    _memo: dict[str, Any] = field(default_factory=dict)

    @property
    def catalog(self):
        return self.searcher.catalog

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """A value derived from this engine's catalog, made once (racing makers compute the same)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def explainer_for(self, name: str | None, settings: Settings):
        """The default explainer, or another registered backend (built once per engine)."""
        if not name or name == self.explainer_name:
            return self.explainer
        with self._others_lock:  # a failed build is retried on the next request (not cached)
            if name not in self._others:
                self._others[name] = build_explainer(name, settings)
            return self._others[name]


def warm_up(searcher) -> None:
    """Load the lazily built towers now (text and image), so neither the first request after start
    nor the first after a reload waits seconds for a model to load."""
    from PIL import Image

    t0 = time.time()
    searcher.search("warm up", 1)
    searcher.search_image(Image.new("RGB", (64, 96), (255, 255, 255)), 1)
    log.info("towers warmed up in %.1fs", time.time() - t0)


def check_catalog_matches_index(searcher) -> None:
    """Refuse a catalog and an index that disagree (a catalog re-imported after the index was
    built): every catalog item must have a vector, or /similar and /recommend cannot answer for it."""
    index = getattr(searcher, "index", None)
    rows = getattr(index, "row", None)
    if rows is None:
        return
    missing = [i for i in searcher.catalog.ids if i not in rows]
    extra = len(rows) - (len(searcher.catalog.ids) - len(missing))
    if missing or extra:
        raise ValueError(f"catalog and index disagree: {len(missing)} catalog items have no vector (e.g. {missing[:3]}), "
                         f"{extra} indexed items are not in the catalog; run `whyrec index build` for this catalog")


def build_recommenders(settings: Settings, searcher, previous: Engine | None = None) -> tuple[Any, Any, Any]:
    """The served recommender and "goes well with" model, from the config's `recommend:` section;
    a reload takes over the previous engine's when its catalog, index (and so the saved fit beside
    it) and settings are the same objects, and goes-with's sets file is unchanged. Returns (recommender,
    goes-with, the sets file's stamp)."""
    from retrieval.artifacts import file_stamp
    from retrieval.config import section
    from retrieval.recommenders.complement import GoesWithConfig, build_goes_with
    from retrieval.recommenders.factory import RecommendConfig
    from retrieval.recommenders.serve import ServedRecommender

    from retrieval.search import IndexConfig

    raw = load_yaml(settings.config) if settings.config else {}
    cfg = section(raw, "recommend", RecommendConfig)
    index_dir = section(raw, "index", IndexConfig).dir  # the searcher's index; `whyrec index fit-recommender` saves the fit beside it
    gcfg = section({"goes_with": cfg.goes_with}, "goes_with", GoesWithConfig)
    sets = file_stamp(gcfg.sets) if gcfg.sets else None
    if (previous is not None and previous.recommender is not None and previous.searcher.catalog is searcher.catalog
            and previous.searcher.index is searcher.index and previous.recommender.cfg == cfg
            and previous.goes_with_sets == sets):
        return previous.recommender, previous.goes_with, sets
    rec = ServedRecommender.build(searcher.catalog, cfg, searcher.index, saved_dir=index_dir)
    return rec, build_goes_with(searcher.catalog, gcfg, rec.ctx), sets


def build_engine(settings: Settings, generation: int = 0,
                 searcher_factory: Callable[[Settings, Any], Any] = build_searcher, previous: Engine | None = None) -> Engine:
    """One generation of the service; `previous` (a reload) lends what did not change."""
    t0 = time.time()
    searcher = searcher_factory(settings, previous.searcher if previous is not None else None)
    check_catalog_matches_index(searcher)
    explainer = build_explainer(settings.explainer, settings)
    if settings.warmup:
        warm_up(searcher)
    searcher.histories()  # built now, not on the first request
    _ = searcher.catalog.interactions.by_activity, searcher.catalog.interactions.last_days  # /users: ranked once
    recommender, goes_with, sets = build_recommenders(settings, searcher, previous)
    engine = Engine(searcher, explainer, settings.explainer, LRUCache(settings.explain_cache_size), generation, recommender, goes_with,
                    category_head=build_category_head(settings, searcher), goes_with_sets=sets)
    log.info("engine %d loaded: %d items, explainer %s, %.1fs", generation, len(searcher.catalog), settings.explainer, time.time() - t0)
    return engine


RELEASE_AGAIN_S = 10.0  # after a swap: requests in flight on the old engine are done by then


def release_memory() -> None:
    """Free unreachable engines now (a full collection) and hand freed heap pages back to the OS
    (glibc's malloc_trim), so the resident size falls back to one engine after a reload."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the memory is reused, just not returned
        pass


class EngineHolder:
    """Holds the current engine; `reload()` builds the next one beside it, then swaps the reference."""

    def __init__(self, settings: Settings, searcher_factory: Callable[[Settings, Any], Any] = build_searcher):
        self.settings = settings
        self.searcher_factory = searcher_factory
        self._engine: Engine | None = None
        self._reload_lock = threading.Lock()

    @property
    def engine(self) -> Engine | None:
        return self._engine

    def load(self) -> Engine:
        self._engine = build_engine(self.settings, 0, self.searcher_factory)
        return self._engine

    def reload(self) -> Engine:
        """Build a new engine (the old one keeps serving meanwhile, and lends it whatever is unchanged on
        disk, so only what changed is held twice), then swap. One reload at a time.

        After the swap the old engine is released at once: its reference cycles (searcher, vocabulary,
        recommenders) would otherwise wait for a full garbage collection, keeping two engines in
        memory long after the swap. Requests still in flight keep it until they finish; a second
        collection shortly after catches those."""
        with self._reload_lock:
            generation = (self._engine.generation + 1) if self._engine else 0
            new = build_engine(self.settings, generation, self.searcher_factory, previous=self._engine)
            self._engine = new  # a single reference assignment: atomic for every reader
            release_memory()
            later = threading.Timer(RELEASE_AGAIN_S, release_memory)
            later.daemon = True
            later.start()
            return new


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_holder(request: Request) -> EngineHolder:
    return request.app.state.holder


def get_engine(holder: EngineHolder = Depends(get_holder)) -> Engine:
    engine = holder.engine
    if engine is None:
        raise HTTPException(503, "the service is still loading")
    return engine
