"""POST /recommend: the configured recommender (`recommend.model`, the one `whyrec eval rec`
measures) for a shopper's history (or a given one), optionally blended with a query. Each result
carries the recommender's reason from the history ("You bought this dress in black in April
2020."), checked claim by claim against the catalog and the purchase records."""
from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter, Depends, HTTPException

from api.deps import Engine, get_engine, get_settings
from api.schemas import ErrorOut, ReasonOut, RecommendIn, ResultsOut
from api.service import check_history, check_k, results, shopper_history
from api.settings import Settings

router = APIRouter(tags=["recommend"])


def checked_reason(engine: Engine, reason, bought: dict[str, set[str]] | None = None) -> ReasonOut:
    """The reason, with each claim judged by the grounding checker against the item it names and
    the purchase day against the records; a reason that fails is replaced by a plain one."""
    from synth_data.grounding import check

    problems = []
    for claim in reason.claims:
        product = engine.catalog.by_id.get(claim.item_id)
        result = check(claim.text, product) if product is not None else None
        if result is None or not result.ok:
            problems += result.reasons() if result is not None else [f"unknown item {claim.item_id}"]
    if reason.day is not None and bought is not None and reason.day not in bought.get(reason.item_id, set()):
        problems.append(f"no purchase of {reason.item_id} on {reason.day}")
    if problems:
        return ReasonOut(kind=reason.kind, text="Recommended from your purchase history.", checked=False, problems=problems)
    return ReasonOut(kind=reason.kind, text=reason.text, item_id=reason.item_id, day=reason.day)


def purchase_days(rec, h) -> dict[str, set[str]]:
    """item id -> ISO days it was bought, from the history the recommender scored."""
    out: dict[str, set[str]] = {}
    for i, d in zip(h.items, h.days):
        out.setdefault(rec.catalog.ids[int(i)], set()).add(str(np.datetime64("1970-01-01") + np.timedelta64(int(round(d)), "D")))
    return out


@router.post("/recommend", response_model=ResultsOut, responses={404: {"model": ErrorOut, "description": "unknown shopper or item"}},
             summary="Personalised ranking from a purchase history")
def recommend(body: RecommendIn, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)) -> ResultsOut:
    from retrieval.recommenders.serve import query_scores

    t0 = time.perf_counter()
    k = check_k(body.k, settings)
    history = shopper_history(engine, settings, body.user_id, body.history)  # 404 for an unknown shopper or item
    extra = check_history(engine, body.history or [])
    rec = engine.recommender
    qs, terms = query_scores(engine.searcher, body.query, engine.catalog) if body.query else (None, [])
    try:
        hits = rec.recommend(extra, k, user=body.user_id, exclude_bought=body.exclude_bought, query=qs,
                             query_weight=engine.searcher.cfg.query_weight)
    except ValueError as err:
        raise HTTPException(404, str(err)) from None
    index_row = engine.searcher.index.row
    for hit in hits:  # the query's named values each result's facts back
        hit.matched = [t.phrase for t, credit in terms if hit.id in index_row and credit[index_row[hit.id]] > 0]
    days = purchase_days(rec, rec.history(extra, body.user_id))
    label = (f"shopper {body.user_id}" if body.user_id else f"a history of {len(history)} items") + (f" + \"{body.query}\"" if body.query else "")
    out = results(engine, settings, hits, body.query or "", k, body.explain, t0, history=history, label=label)
    for hit, res in zip(hits, out.results):
        res.reason = checked_reason(engine, hit.reason, days)
    out.took_ms = round((time.perf_counter() - t0) * 1000, 2)
    return out
