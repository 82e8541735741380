"""What the routes (and the chat) do with an engine: look items and shoppers up, run the searcher,
and attach cached, grounded rationales. HTTP-free, so chat and REST share one path."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Iterator, Sequence

import numpy as np

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError

from api.deps import Engine
from api.schemas import HitOut, ItemOut, RationaleOut, ResultsOut
from api.settings import Settings

log = logging.getLogger(__name__)


def product_or_404(engine: Engine, item_id: str):
    product = engine.catalog.by_id.get(item_id)
    if product is None:
        raise HTTPException(404, f"no item {item_id!r} in the catalog")
    return product


def has_image(engine: Engine, product) -> bool:
    """Whether /items/{id}/image can serve the item's photo; looked up once per item per engine
    (a stat per result per request was a tenth of a millisecond each)."""
    known = engine.memo("has_image", dict)
    if product.id not in known:
        path = engine.catalog.image_file(product)
        known[product.id] = path is not None and path.is_file()
    return known[product.id]


def item_fields(engine: Engine, product) -> dict[str, Any]:
    """An item's `ItemOut` fields (a hit's too: `HitOut` extends it, built once, not via an ItemOut)."""
    return dict(id=product.id, title=product.title, description=product.description,
                image_url=f"/items/{product.id}/image" if has_image(engine, product) else None,
                price=product.price, colour=product.colour, category=list(product.category),
                attributes={str(k): str(v) for k, v in product.attributes.items()})


def item_out(engine: Engine, product) -> ItemOut:
    return ItemOut(**item_fields(engine, product))


def shopper_items(engine: Engine, user_id: str, limit: int | None = None) -> list[str]:
    """A shopper's purchased item ids, oldest first (the last `limit`); [] for an unknown shopper.
    Read from the catalog's CSR histories (`retrieval.interactions`), built once per engine."""
    inter = engine.catalog.interactions
    items = inter.history_items(user_id)
    if limit is not None:
        items = items[-limit:] if limit > 0 else items[:0]
    return [engine.catalog.ids[int(r)] for r in items]


def shoppers(engine: Engine) -> int:
    """How many shoppers have purchases."""
    return engine.catalog.interactions.n_users


def top_shoppers(engine: Engine, limit: int) -> list[tuple[str, int, str | None]]:
    """(shopper, purchases, last purchase YYYY-MM-DD), most active first (ties by id); the ranking
    and the last days are computed once per catalog, so a call costs only `limit` rows."""
    inter = engine.catalog.interactions
    out = []
    for c in inter.by_activity[:limit]:
        last = inter.last_days[c]
        out.append((str(inter.user_ids[c]), int(inter.counts[c]), None if np.isnat(last) else str(last)))
    return out


def history_of(engine: Engine, user_id: str, limit: int) -> list[str]:
    """A shopper's most recent `limit` purchases, oldest first (404 for an unknown shopper)."""
    items = shopper_items(engine, user_id, limit)
    if not items:
        raise HTTPException(404, f"no shopper {user_id!r} with purchases in the catalog")
    return items


def indexed_or_404(engine: Engine, item_id: str):
    """A catalog item that also has a vector in the index (what /similar needs)."""
    product = product_or_404(engine, item_id)
    if item_id not in engine.searcher.index.row:
        raise HTTPException(404, f"item {item_id!r} is not in the index yet (rebuild it: `whyrec index build`)")
    return product


def check_history(engine: Engine, history: Sequence[str]) -> list[str]:
    unknown = [i for i in history if i not in engine.catalog.by_id]
    if unknown:
        raise HTTPException(404, f"unknown item id(s) in history: {unknown[:5]}")
    rows = engine.searcher.index.row
    unindexed = [i for i in history if i not in rows]
    if unindexed:
        raise HTTPException(404, f"item id(s) in history not in the index yet: {unindexed[:5]} (rebuild it: `whyrec index build`)")
    return list(history)


def shopper_history(engine: Engine, settings: Settings, user_id: str | None, history: Sequence[str] | None) -> list[str]:
    """The history a request stands for: the shopper's purchases, then any items it sends (e.g. a cart)."""
    out = history_of(engine, user_id, settings.history_used) if user_id else []
    return out + check_history(engine, history or [])


def unprocessable(msg: str, *loc: str | int, value: Any = None) -> RequestValidationError:
    """A 422 shaped like FastAPI's own validation errors (so every 422 matches the OpenAPI schema)."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": value}])


def check_k(k: int | None, settings: Settings) -> int:
    return settings.default_k if k is None else k


def history_evidence(engine: Engine, item_id: str, history: Sequence[str], n: int) -> list[str]:
    """The `n` purchases most like the item (by the index's vectors), most alike first: the ones an
    explanation can point at ("like X, which you bought"). Reading every purchase of a long history
    through the vocabulary for every result would cost more than the rest of the request."""
    history = list(dict.fromkeys(i for i in history if i != item_id))
    if len(history) <= n:
        return history
    index = engine.searcher.index
    known = [i for i in history if i in index.row]
    if item_id not in index.row or not known:
        return history[-n:]
    sims = index.scores(index.vector(item_id), known)
    order = sorted(range(len(known)), key=lambda j: (-float(sims[j]), j))
    return [known[j] for j in order[:n]]


def rationale(engine: Engine, settings: Settings, request_text: str, product, score: float | None = None,
              history: Sequence[str] = (), backend: str | None = None) -> tuple[Any, Any]:
    """(Rationale, Evidence) for one item, cached per (request, history, item, backend). Of the
    history, only the purchases most like the item are weighed (see `history_evidence`)."""
    from synth_data.explain import checked_explain, gather_evidence, settle

    name = backend or engine.explainer_name
    history = history_evidence(engine, product.id, history, settings.explain_history)
    key = (request_text, tuple(history), product.id, name)

    def make():
        hist = [engine.catalog.by_id[i] for i in history if i in engine.catalog.by_id]
        evidence = gather_evidence(request_text, product, score=score, history=hist or None)
        grounded = engine.explainer_for("grounded", settings)
        if name == "grounded":  # settles its own text (synth_data.explain.settle)
            return grounded.explain(request_text, product, evidence), evidence
        try:
            explainer = engine.explainer_for(name, settings)
        except Exception as err:  # e.g. llava registered but no adapter configured: say so, answer grounded
            log.warning("explainer %s unavailable: %s", name, err)
            unavailable = RuntimeError(f"backend {name} unavailable: {type(err).__name__}: {err}")
            return settle(unavailable, request_text, product, evidence, fallback=grounded), evidence
        # every text goes through synth_data's one check-and-fallback path, with the grounded one as fallback
        return checked_explain(explainer, request_text, product, evidence, fallback=grounded), evidence

    return engine.cache.get_or_make(key, make)


def rationales_iter(engine: Engine, settings: Settings, request_text: str, items: Sequence[tuple[Any, float | None]],
                    history: Sequence[str] = (), backend: str | None = None) -> Iterator[tuple[int, Any, Any]]:
    """(position, Rationale, Evidence) for many (product, score) pairs, each as soon as it is ready:
    cached ones first, then the explainer's, all of a response's uncached items in one
    `explain_iter` call (the llava explainer: composed from cached item text at once, the rest in
    one batched generate call). Explainers without `explain_iter` go item by item. Cached like
    `rationale`."""
    from synth_data.explain import checked_explain, gather_evidence, settle

    name = backend or engine.explainer_name
    grounded = engine.explainer_for("grounded", settings)
    todo: list[tuple[int, Any, Any, tuple]] = []
    for i, (product, score) in enumerate(items):
        hist_ids = history_evidence(engine, product.id, history, settings.explain_history)
        key = (request_text, tuple(hist_ids), product.id, name)
        hit = engine.cache.get(key)
        if hit is not None:
            yield (i, *hit)
            continue
        hist = [engine.catalog.by_id[h] for h in hist_ids if h in engine.catalog.by_id]
        todo.append((i, product, gather_evidence(request_text, product, score=score, history=hist or None), key))
    if not todo:
        return
    explainer = grounded
    if name != "grounded":
        try:
            explainer = engine.explainer_for(name, settings)
        except Exception as err:  # e.g. llava registered but no adapter configured: say so, answer grounded
            log.warning("explainer %s unavailable: %s", name, err)
            unavailable = RuntimeError(f"backend {name} unavailable: {type(err).__name__}: {err}")
            for i, product, ev, key in todo:
                r = settle(unavailable, request_text, product, ev, fallback=grounded)
                engine.cache.put(key, (r, ev))
                yield i, r, ev
            return
    if hasattr(explainer, "explain_iter"):
        batch = [(request_text, product, ev) for _, product, ev, _ in todo]
        for j, r in explainer.explain_iter(batch):
            i, product, ev, key = todo[j]
            engine.cache.put(key, (r, ev))
            yield i, r, ev
        return
    for i, product, ev, key in todo:
        if explainer is grounded:
            r = grounded.explain(request_text, product, ev)
        else:
            r = checked_explain(explainer, request_text, product, ev, fallback=grounded)
        engine.cache.put(key, (r, ev))
        yield i, r, ev


def like_request(product) -> str:
    """What "items like this one" asks for, in the vocabulary's words: its colour, pattern and type
    ("black striped t-shirt"), so rationales of similar items say what they share with it."""
    from retrieval.vocabulary import item_values

    values = item_values(product)
    words = [sorted(values.get(kind) or [""])[0] for kind in ("colour", "pattern", "product_type")]
    words = [w for w in words if w and w != "solid"]
    return " ".join(words) or product.title


def rationale_out(r) -> RationaleOut:
    return RationaleOut(text=r.text, facts_used=list(r.facts_used), backend=r.backend, fallback_reason=r.fallback_reason,
                        unverified=list(getattr(r, "unverified", [])))


def evidence_dict(evidence) -> dict[str, Any]:
    """Evidence as JSON-safe data (its own to_dict when it has one)."""
    if hasattr(evidence, "to_dict"):
        evidence = evidence.to_dict()

    def clean(x):
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            if hasattr(x, "facts") and hasattr(x, "title") and hasattr(x, "id"):  # a Product: id + title is enough
                return {"id": x.id, "title": x.title}
            return {f.name: clean(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple, set, frozenset)):
            return [clean(v) for v in x]
        if isinstance(x, (str, int, bool)) or x is None:
            return x
        if isinstance(x, float):
            return x if x == x and abs(x) != float("inf") else None
        try:
            return float(x)  # numpy scalars
        except (TypeError, ValueError):
            return str(x)
    out = clean(evidence)
    return out if isinstance(out, dict) else {"evidence": out}


def hits_out(engine: Engine, settings: Settings, hits, request_text: str, explain: bool,
             history: Sequence[str] = ()) -> list[HitOut]:
    """The ranked items; with `explain`, each with its rationale (one batched explainer call for all)."""
    products = [engine.catalog.by_id[hit.id] for hit in hits]
    why: dict[int, RationaleOut] = {}
    if explain:
        pairs = [(p, float(hit.dense)) for p, hit in zip(products, hits)]
        why = {i: rationale_out(r) for i, r, _ in rationales_iter(engine, settings, request_text, pairs, history)}
    out = []
    for rank, (hit, product) in enumerate(zip(hits, products), 1):
        out.append(HitOut(**item_fields(engine, product), rank=rank, score=float(hit.score), dense=float(hit.dense),
                          matched=[_term_text(t) for t in (hit.matched or [])], because=getattr(hit, "because", None),
                          rationale=why.get(rank - 1)))
    return out


def _term_text(t) -> str:
    if isinstance(t, str):
        return t
    phrase = getattr(t, "phrase", None) or getattr(t, "value", None) or str(t)
    return f"not {phrase}" if getattr(t, "negated", False) else phrase


def results(engine: Engine, settings: Settings, hits, request_text: str, k: int, explain: bool, t0: float,
            history: Sequence[str] = (), label: str | None = None) -> ResultsOut:
    """The response body; `request_text` is what rationales are written against, `label` what the client sees."""
    return ResultsOut(request=request_text, label=label if label is not None else request_text, k=k, results=hits_out(engine, settings, hits, request_text, explain, history),
                      explainer=engine.explainer_name if explain else None, took_ms=round((time.perf_counter() - t0) * 1000, 2))
