"""POST /recommend: a personalised ranking from a shopper's history (or a given one), optionally
blended with a query; the rationales may point at the history ("you bought ...")."""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from api.deps import Engine, get_engine, get_settings
from api.schemas import ErrorOut, RecommendIn, ResultsOut
from api.service import check_k, results, shopper_history
from api.settings import Settings

router = APIRouter(tags=["recommend"])


@router.post("/recommend", response_model=ResultsOut, responses={404: {"model": ErrorOut, "description": "unknown shopper or item"}},
             summary="Personalised ranking from a purchase history")
def recommend(body: RecommendIn, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)) -> ResultsOut:
    t0 = time.perf_counter()
    k = check_k(body.k, settings)
    history = shopper_history(engine, settings, body.user_id, body.history)
    hits = engine.searcher.recommend(history, k, query=body.query)
    label = (f"shopper {body.user_id}" if body.user_id else f"a history of {len(history)} items") + (f" + \"{body.query}\"" if body.query else "")
    return results(engine, settings, hits, body.query or "", k, body.explain, t0, history=history, label=label)
