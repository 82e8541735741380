"""POST /explain: why one item fits a query or a shopper, the evidence behind it, and which backend wrote it."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from api.deps import Engine, available_explainers, get_engine, get_settings
from api.schemas import ErrorOut, ExplainIn, ExplainOut
from api.service import evidence_dict, item_out, product_or_404, rationale, rationale_out, shopper_history, unprocessable
from api.settings import Settings

router = APIRouter(tags=["explain"])


@router.post("/explain", response_model=ExplainOut,
             responses={404: {"model": ErrorOut, "description": "unknown item or shopper"}},
             summary="A rationale for one item, with its evidence")
def explain(body: ExplainIn, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)) -> ExplainOut:
    product = product_or_404(engine, body.item_id)
    if body.backend and body.backend != engine.explainer_name and body.backend not in available_explainers():
        raise unprocessable(f"unknown explainer backend {body.backend!r}; available: {available_explainers()}", "backend")
    history = shopper_history(engine, settings, body.user_id, body.history)
    score = item_score(engine, body.query, history, body.item_id)
    r, evidence = rationale(engine, settings, body.query or "", product, score, history, body.backend)
    return ExplainOut(item=item_out(engine, product), rationale=rationale_out(r), evidence=evidence_dict(evidence), backend=r.backend)


def item_score(engine: Engine, query: str | None, history: list[str], item_id: str) -> float | None:
    """The dense similarity the searcher gives this item for this request (as in a hit's `dense`):
    the query vector, the shopper's recency-weighted vector, or their blend as /recommend uses."""
    from retrieval.encoders import l2_normalise

    searcher = engine.searcher
    if item_id not in searcher.index.row:
        return None
    vec = None
    if history:
        vec = searcher.user_vector(history)
        if query:
            w = searcher.cfg.query_weight
            vec = l2_normalise(w * searcher.query_vector(query) + (1 - w) * vec)
    elif query:
        vec = searcher.query_vector(query)
    if vec is None:
        return None
    return float(searcher.index.scores(vec, [item_id])[0])
