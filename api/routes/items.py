"""Read-only lookups: an item, its photo, items like it, and the shoppers the web page offers."""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse

from api.deps import Engine, get_engine, get_settings
from api.schemas import K_MAX, ErrorOut, ItemOut, ResultsOut, UserOut
from api.service import (check_k, indexed_or_404, item_out, like_request, product_or_404, top_shoppers,
                         results)
from api.settings import Settings

router = APIRouter(tags=["items"])
NOT_FOUND = {404: {"model": ErrorOut, "description": "unknown item"}}
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".gif": "image/gif"}


@router.get("/items/{item_id}", response_model=ItemOut, responses=NOT_FOUND, summary="One catalog item and its facts")
def get_item(item_id: str, engine: Engine = Depends(get_engine)) -> ItemOut:
    return item_out(engine, product_or_404(engine, item_id))


@router.get("/items/{item_id}/image", response_class=FileResponse, summary="The item's photo",
            responses={404: {"model": ErrorOut, "description": "unknown item, or no photo"},
                       200: {"content": {t: {} for t in sorted(set(IMAGE_TYPES.values()))}}})
def get_item_image(item_id: str, engine: Engine = Depends(get_engine)):
    product = product_or_404(engine, item_id)
    path = engine.catalog.image_file(product)
    if path is None or not path.is_file():
        raise HTTPException(404, f"item {item_id!r} has no photo")
    media = IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media, headers={"Cache-Control": "public, max-age=3600"})


@router.get("/items/{item_id}/similar", response_model=ResultsOut, responses=NOT_FOUND, summary="Items that look and read alike")
def similar(item_id: str, k: int | None = Query(None, ge=1, le=K_MAX), explain: bool = False,
            engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)) -> ResultsOut:
    t0 = time.perf_counter()
    product = indexed_or_404(engine, item_id)
    k = check_k(k, settings)
    hits = engine.searcher.similar(item_id, k)
    # the item stands in for the request: its colour, pattern and type
    return results(engine, settings, hits, like_request(product), k, explain, t0, label=f"similar to {product.title}")


@router.get("/users", response_model=list[UserOut], summary="Shoppers with purchases (most active first)")
def users(limit: int | None = Query(None, ge=1, le=1000), engine: Engine = Depends(get_engine),
          settings: Settings = Depends(get_settings)) -> list[UserOut]:
    limit = min(limit or settings.users_listed, 1000)
    return [UserOut(id=u, purchases=n, last=last) for u, n, last in top_shoppers(engine, limit)]


@router.get("/items/{item_id}/goes-with", response_model=ResultsOut, responses=NOT_FOUND,
            summary="Items that go well with this one (learned from rooms, outfits or baskets), each with its reason")
def goes_with(item_id: str, k: int | None = Query(None, ge=1, le=K_MAX), explain: bool = False,
              engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)) -> ResultsOut:
    from api.schemas import ReasonOut
    from retrieval.recommenders.serve import Recommendation

    t0 = time.perf_counter()
    product = product_or_404(engine, item_id)
    if engine.goes_with is None:
        raise HTTPException(404, "this catalog has no co-occurrence data (rooms, outfits or multi-item baskets) to learn from")
    k = check_k(k, settings)
    found = engine.goes_with.goes_with([item_id], k)
    hits = [Recommendation(i, s, s, because=item_id) for i, s, _, _ in found]
    out = results(engine, settings, hits, "", k, explain, t0, label=f"goes well with {product.title}")
    for res, (_, _, kind, text) in zip(out.results, found):
        res.reason = ReasonOut(kind=kind, text=text, item_id=item_id)
    return out
