"""The served recommender: the configured model, fitted on the catalog's purchases, answering
histories (a known shopper's, a cart, or both) with items and history-based reasons."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.catalog import Catalog
from retrieval.recommenders.context import ModelContext, index_vectors, tower_vectors
from retrieval.recommenders.data import History, TrainData, to_days
from retrieval.recommenders.factory import RecommendConfig, create_recommender, drop_unbuildable, needs_vectors
from retrieval.recommenders.models import Recommender, standardise
from retrieval.recommenders.reasons import Reason, history_reason

log = logging.getLogger(__name__)


@dataclass
class Recommendation:
    """One recommended item (duck-typed like `retrieval.search.Hit` for the API's result builder)."""

    id: str
    score: float
    dense: float
    matched: list[str] = field(default_factory=list)
    because: str | None = None
    reason: Reason | None = None


def purchases_frame(catalog: Catalog, merge: bool = True):
    """The catalog's purchases with file order, same-day units merged (one purchase per item and day)."""
    inter = catalog.interactions.merged_same_day() if merge else catalog.interactions
    frame = inter.frame()  # every item is a catalog row (`retrieval.interactions`)
    frame["order"] = np.arange(len(frame))
    return frame


def load_context(catalog: Catalog, cfg: RecommendConfig, index=None, npy_ids: Sequence[str] | None = None) -> ModelContext:
    """Item vectors as `cfg.item_vectors` says: the serving index's, the frozen towers' (cache), or a file."""
    vectors = image = None
    src = cfg.item_vectors
    if src == "index":
        if index is None:
            raise ValueError("recommend.item_vectors is 'index' but no index was given (load one, or set item_vectors: null)")
        vectors = index_vectors(catalog, index)
    elif src == "towers":
        text, img = tower_vectors(catalog, cfg.cache_dir)
        if text is not None:
            vectors = text if img is None else np.concatenate([text, img], 1) / np.sqrt(2)
    elif src:
        vectors = np.load(src).astype(np.float32)
    if cfg.image_features:
        image = tower_vectors(catalog, cfg.cache_dir)[1]
    return ModelContext.from_catalog(catalog, vectors, image)


def build_model(name: str, cfg: RecommendConfig, ctx: ModelContext) -> Recommender:
    specs = drop_unbuildable(cfg.models, ctx)
    if name not in specs:
        raise ValueError(f"model {name!r} needs item vectors, and none are configured (recommend.item_vectors)")
    return create_recommender(name, specs, ctx)


class ServedRecommender:
    """`recommend.model` fitted on every purchase of the catalog, or restored from the fit saved
    beside the index (`saved_dir`, `whyrec index fit-recommender`) when that fit is of this very
    catalog, purchases and config. `fit`: "auto" (restore, else refit up to cfg.fit_at_start_max_items
    items, else refuse), "always" (refit: what fit-recommender does)."""

    def __init__(self, catalog: Catalog, cfg: RecommendConfig, ctx: ModelContext, saved_dir: str | Path | None = None,
                 fit: str = "auto"):
        from retrieval.recommenders import saved

        self.catalog, self.cfg, self.ctx = catalog, cfg, ctx
        t0 = time.time()
        purchases = catalog.interactions.merged_same_day() if cfg.merge_same_day else catalog.interactions
        self.data = TrainData.from_interactions(purchases, catalog.ids, catalog.row)
        self.fingerprint = saved.fingerprint(cfg, ctx, self.data)
        log.info("recommender data: %d purchases, %d shoppers, fingerprint in %.1fs", len(purchases), len(self.data.users), time.time() - t0)
        model = build_model(cfg.model, cfg, ctx)
        state, why = saved.load_fitted(saved_dir, cfg.model, self.fingerprint) if saved_dir and fit == "auto" else (None, "refit asked")
        if state is not None:
            self.model, self.source = model.restore(self.data, state), "saved"
        else:
            if saved_dir and fit == "auto":
                limit = cfg.fit_at_start_max_items
                if limit is not None and len(catalog) > limit:
                    raise ValueError(f"recommender {cfg.model}: {why} at {saved_dir}, and {len(catalog)} items are more than "
                                     f"recommend.fit_at_start_max_items ({limit}) to fit at start-up; run `whyrec index fit-recommender`")
                if why != "no saved fit":
                    log.warning("recommender %s: %s at %s: refitting now (run `whyrec index fit-recommender`)", cfg.model, why, saved_dir)
            self.model, self.source = model.fit(self.data), "fitted"
        if len(self.data.users):  # lazily built tables (tf-idf neighbours) now, not in the first request
            self.model.score_histories([self.data.history_of(self.data.users[0])])
        self.fit_s = round(time.time() - t0, 2)
        self.name = cfg.model
        log.info("recommender %s (%s) %s on %d purchases in %.1fs", self.name, self.model.kind, self.source, len(purchases), self.fit_s)

    def save(self, index_dir: str | Path) -> Path:
        """Save this fit beside the index, for `whyrec serve` to restore."""
        from retrieval.recommenders import saved

        return saved.save_fitted(index_dir, self.name, self.model.kind, self.fingerprint, self.model.fitted_state(),
                                 {"fit_s": self.fit_s, "items": len(self.catalog), "purchases": int(len(self.data.hist_item))})

    @classmethod
    def build(cls, catalog: Catalog, cfg: RecommendConfig, index=None, saved_dir: str | Path | None = None,
              fit: str = "auto") -> "ServedRecommender":
        if cfg.item_vectors == "index" and index is None:
            raise ValueError("recommend.item_vectors: index needs the serving index")
        if needs_vectors(cfg.models, cfg.model) and cfg.item_vectors is None:
            log.warning("recommend.model %s has a content part but item_vectors is null: it is left out", cfg.model)
        if not catalog.interactions and cfg.model != "content":
            log.warning("the catalog has no purchases: serving the content model instead of %s", cfg.model)
            cfg = RecommendConfig(**{**cfg.__dict__, "model": "content", "models": {**cfg.models, "content": cfg.models.get("content", {"kind": "content"})}})
        return cls(catalog, cfg, load_context(catalog, cfg, index), saved_dir, fit)

    def history(self, item_ids: Sequence[str], user: str | None = None) -> History:
        """A shopper's training history (when known) followed by extra items (a cart, dated today's last day)."""
        items, days = (self.data.history(user) if user else (np.zeros(0, np.int64), np.zeros(0)))
        extra = [self.data.index[i] for i in item_ids if i in self.data.index]
        if extra:
            now = self.data.last_day if self.data.last_day is not None else float(to_days([np.datetime64("today")])[0])
            items = np.r_[items, np.array(extra, np.int64)]
            days = np.r_[days, np.full(len(extra), now)]
        return History(items, days, user if user and self.data.knows(user) else None, undated=len(extra))

    def recommend(self, item_ids: Sequence[str] = (), k: int = 10, user: str | None = None, exclude_bought: bool | None = None,
                  query: np.ndarray | None = None, query_weight: float = 0.5) -> list[Recommendation]:
        """Top-k items for a history (shopper id and/or item ids, oldest first), each with a reason.
        `query`: a query's score of every item (`query_scores`), blended in after standardising both."""
        h = self.history(item_ids, user)
        if not len(h):
            raise ValueError("the history holds no catalog item")
        exclude = self.cfg.exclude_bought if exclude_bought is None else exclude_bought
        s = self.model.score_histories([h])
        if query is not None:
            s = (1 - query_weight) * standardise(s) + query_weight * standardise(np.asarray(query, np.float32)[None, :])
        s = s[0].astype(np.float64)
        if exclude:
            s[h.items] = -np.inf
        k = max(1, min(int(k), len(s)))
        top = np.argpartition(-s, k - 1)[:k]
        top = top[np.lexsort((top, -s[top]))]
        top = top[np.isfinite(s[top])]
        out = []
        for row in top:
            reason = history_reason(int(row), self.catalog.products, h, self.ctx.groups, self.ctx.item_vectors)
            out.append(Recommendation(self.catalog.ids[row], float(s[row]), float(s[row]), because=reason.item_id, reason=reason))
        return out


def fit_recommender(config: str | Path | dict) -> dict:
    """`whyrec index fit-recommender`: fit the config's served recommender on the catalog's
    purchases and save the fit beside the index, where `whyrec serve` restores it (large catalogs
    cannot fit at start-up)."""
    from retrieval.config import load_yaml, section
    from retrieval.index import open_index
    from retrieval.search import CatalogConfig, IndexConfig

    raw = config if isinstance(config, dict) else load_yaml(config)
    icfg = section(raw, "index", IndexConfig)
    cfg = section(raw, "recommend", RecommendConfig)
    t0 = time.time()
    catalog = Catalog.load(section(raw, "catalog", CatalogConfig).dir)
    index = open_index(icfg.dir, icfg.params) if cfg.item_vectors == "index" else None
    log.info("catalog (%d items) and index loaded in %.1fs", len(catalog), time.time() - t0)
    rec = ServedRecommender.build(catalog, cfg, index, saved_dir=icfg.dir, fit="always")
    t1 = time.time()
    path = rec.save(icfg.dir)
    size = sum(f.stat().st_size for f in path.iterdir())
    log.info("recommender fit saved at %s (%.0f MB) in %.1fs", path, size / 2**20, time.time() - t1)
    return {"model": rec.name, "kind": rec.model.kind, "items": len(catalog), "purchases": int(len(rec.data.hist_item)),
            "fit_seconds": rec.fit_s, "save_seconds": round(time.time() - t1, 2), "saved": str(path), "bytes": size,
            "fingerprint": rec.fingerprint}


def query_scores(searcher, query: str, catalog: Catalog) -> tuple[np.ndarray, list]:
    """A query's score of every catalog item (catalog order) as search scores it: dense similarity
    plus the share of the query's named values the item's facts back; and the query's terms."""
    q = searcher.read(query)  # the catalog's vocabulary: its terms are the keys of the searcher's fact postings
    qv = searcher.query_vector(q.text)
    dense = np.zeros(len(catalog), np.float32)
    rows = np.array([searcher.index.row.get(pid, -1) for pid in catalog.ids])
    known = rows >= 0
    dense[known] = np.asarray(searcher.index.vectors[rows[known]], np.float32) @ qv
    terms = list(q.terms)
    fact = np.zeros(len(catalog), np.float32)
    for t in terms:
        c = np.zeros(len(catalog), np.float32)
        c[known] = searcher.term_credit(t)[rows[known]]
        fact += -(c > 0).astype(np.float32) if t.negated else c
    if terms:
        fact /= len(terms)
    return dense + searcher.cfg.attribute_weight * fact, [(t, searcher.term_credit(t)) for t in terms if not t.negated]
