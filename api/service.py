"""What the routes (and the chat) do with an engine: look items and shoppers up, run the searcher,
and attach cached, grounded rationales. HTTP-free, so chat and REST share one path."""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Sequence

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError

from api.deps import Engine
from api.schemas import HitOut, ItemOut, RationaleOut, ResultsOut
from api.settings import Settings

_history_lock = threading.Lock()


def product_or_404(engine: Engine, item_id: str):
    product = engine.catalog.by_id.get(item_id)
    if product is None:
        raise HTTPException(404, f"no item {item_id!r} in the catalog")
    return product


def item_out(engine: Engine, product) -> ItemOut:
    has_image = engine.catalog.image_file(product) is not None
    return ItemOut(
        id=product.id, title=product.title, description=product.description,
        image_url=f"/items/{product.id}/image" if has_image else None,
        price=product.price, colour=product.colour, category=list(product.category),
        attributes={str(k): str(v) for k, v in product.attributes.items()},
    )


def histories(engine: Engine) -> dict[str, list[tuple[Any, str]]]:
    """user -> [(timestamp, item id)] oldest first; built once per engine."""
    cached = engine._others.get("__histories__")
    if cached is not None:
        return cached
    with _history_lock:
        cached = engine._others.get("__histories__")
        if cached is None:
            by_user: dict[str, list[tuple[Any, str]]] = {}
            for it in engine.catalog.interactions:
                by_user.setdefault(it.user, []).append((it.timestamp, it.item))
            for events in by_user.values():
                events.sort(key=lambda e: (e[0], e[1]))
            engine._others["__histories__"] = cached = by_user
    return cached


def history_of(engine: Engine, user_id: str, limit: int) -> list[str]:
    events = histories(engine).get(user_id)
    if not events:
        raise HTTPException(404, f"no shopper {user_id!r} with purchases in the catalog")
    return [item for _, item in events[-limit:]]


def unprocessable(msg: str, *loc: str | int, value: Any = None):
    """A 422 shaped like FastAPI's own validation errors (so every 422 matches the OpenAPI schema)."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": value}])


def check_history(engine: Engine, history: Sequence[str], limit: int) -> list[str]:
    if len(history) > limit:
        raise unprocessable(f"history holds {len(history)} items; the limit is {limit}", "history")
    unknown = [i for i in history if i not in engine.catalog.by_id]
    if unknown:
        raise HTTPException(404, f"unknown item id(s) in history: {unknown[:5]}")
    return list(history)


def check_k(k: int | None, settings: Settings) -> int:
    k = settings.default_k if k is None else k
    if not 1 <= k <= settings.max_k:
        raise unprocessable(f"k must lie in [1, {settings.max_k}]", "k", value=k)
    return k


def check_query(query: str | None, settings: Settings) -> str | None:
    if query is not None and len(query) > settings.max_query_chars:
        raise unprocessable(f"query longer than {settings.max_query_chars} characters", "query")
    return query


def rationale(engine: Engine, settings: Settings, request_text: str, product, score: float | None = None,
              history: Sequence[str] = (), backend: str | None = None) -> tuple[Any, Any]:
    """(Rationale, Evidence) for one item, cached per (request, history, item, backend)."""
    from synth_data.explain import gather_evidence

    explainer = engine.explainer_for(backend, settings)
    name = backend or engine.explainer_name
    key = (request_text, tuple(history), product.id, name)

    def make():
        hist = [engine.catalog.by_id[i] for i in history if i in engine.catalog.by_id]
        evidence = gather_evidence(request_text, product, score=score, history=hist or None)
        return explainer.explain(request_text, product, evidence), evidence

    return engine.cache.get_or_make(key, make)


def rationale_out(r) -> RationaleOut:
    return RationaleOut(text=r.text, facts_used=list(r.facts_used), backend=r.backend, fallback_reason=r.fallback_reason)


def evidence_dict(evidence) -> dict[str, Any]:
    """Evidence as JSON-safe data (dataclasses, Terms and Products become dicts)."""
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
    out = []
    for rank, hit in enumerate(hits, 1):
        product = engine.catalog.by_id[hit.id]
        item = item_out(engine, product)
        r = None
        if explain:
            r = rationale_out(rationale(engine, settings, request_text, product, float(hit.score), history)[0])
        out.append(HitOut(**item.model_dump(), rank=rank, score=float(hit.score),
                          matched=[_term_text(t) for t in (getattr(hit, "matched", None) or [])], rationale=r))
    return out


def _term_text(t) -> str:
    if isinstance(t, str):
        return t
    phrase = getattr(t, "phrase", None) or getattr(t, "value", None) or str(t)
    return f"not {phrase}" if getattr(t, "negated", False) else phrase


def results(engine: Engine, settings: Settings, hits, request_text: str, k: int, explain: bool, t0: float,
            history: Sequence[str] = ()) -> ResultsOut:
    return ResultsOut(request=request_text, k=k, results=hits_out(engine, settings, hits, request_text, explain, history),
                      explainer=engine.explainer_name if explain else None, took_ms=round((time.perf_counter() - t0) * 1000, 2))
