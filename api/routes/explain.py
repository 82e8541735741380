"""POST /explain: why one item fits a query or a shopper, the evidence behind it, and which backend wrote it."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from api.deps import Engine, available_explainers, get_engine, get_settings
from api.schemas import ErrorOut, ExplainIn, ExplainOut
from api.service import (check_history, check_query, evidence_dict, history_of, item_out, product_or_404, rationale, rationale_out,
                         unprocessable)
from api.settings import Settings

router = APIRouter(tags=["explain"])


@router.post("/explain", response_model=ExplainOut,
             responses={404: {"model": ErrorOut, "description": "unknown item or shopper"}},
             summary="A rationale for one item, with its evidence")
def explain(body: ExplainIn, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)) -> ExplainOut:
    product = product_or_404(engine, body.item_id)
    check_query(body.query, settings)
    if body.backend and body.backend != engine.explainer_name and body.backend not in available_explainers():
        raise unprocessable(f"unknown explainer backend {body.backend!r}; available: {available_explainers()}", "backend")
    history: list[str] = []
    if body.user_id:
        history = history_of(engine, body.user_id, settings.max_history)
    elif body.history:
        history = check_history(engine, body.history, settings.max_history)
    score = item_score(engine, body.query, history, body.item_id)
    r, evidence = rationale(engine, settings, body.query or "", product, score, history, body.backend)
    return ExplainOut(item=item_out(engine, product), rationale=rationale_out(r), evidence=evidence_dict(evidence), backend=r.backend)


def item_score(engine: Engine, query: str | None, history: list[str], item_id: str) -> float | None:
    """The similarity the searcher gives this item for this request, when it can say."""
    scorer = getattr(engine.searcher, "score", None)
    if scorer is None:
        return None
    return float(scorer(item_id, query=query, history=history or None))
