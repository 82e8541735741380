"""POST /search (text) and POST /search/image (multipart upload, optional text)."""
from __future__ import annotations

import time

from typing import Iterator

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import Engine, get_engine, get_settings
from api.schemas import CategoryGuessOut, ErrorOut, RationaleEventOut, ResultsOut, SearchIn, StreamDoneOut
from api.schemas import K_MAX, QUERY_MAX
from api.service import check_k, rationale_out, rationales_iter, results
from api.settings import Settings
from api.uploads import UploadError, decode_image

router = APIRouter(tags=["search"])


@router.post("/search", response_model=ResultsOut, summary="Ranked items for a text query, each with a rationale")
def search(body: SearchIn, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)) -> ResultsOut:
    t0 = time.perf_counter()
    k = check_k(body.k, settings)
    filters = body.filters.as_dict() if body.filters else None
    hits = engine.searcher.search(body.query, k, filters)
    return results(engine, settings, hits, body.query, k, body.explain, t0)


STREAM_DOC = """Server-sent events (text/event-stream), in this order:
- `results`: the ranked items at once, as /search returns them but with `rationale: null` (a `ResultsOut`);
- `rationale`, one per result as soon as it is written, in any order: `{"rank", "id", "rationale"}` (a `RationaleEventOut`);
- `done`: `{"rationales", "took_ms"}` (a `StreamDoneOut`).
Each event is `event: NAME` and one `data: JSON` line. With `explain: false` only `results` and `done` come."""


@router.post("/search/stream", summary="Ranked items at once, then each rationale as it is written (SSE)",
             description=STREAM_DOC, response_class=StreamingResponse,
             responses={200: {"description": "an event stream (see above)",
                              "content": {"text/event-stream": {"schema": {"type": "string"},
                                                                "example": 'event: results\ndata: {"request": "black dress", ...}\n\n'
                                                                           'event: rationale\ndata: {"rank": 1, "id": "0108775015", "rationale": {...}}\n\n'
                                                                           'event: done\ndata: {"rationales": 12, "took_ms": 812.4}\n\n'}}}})
def search_stream(body: SearchIn, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)) -> StreamingResponse:
    t0 = time.perf_counter()
    k = check_k(body.k, settings)
    filters = body.filters.as_dict() if body.filters else None
    hits = engine.searcher.search(body.query, k, filters)  # errors surface as HTTP errors, before the stream starts
    first = results(engine, settings, hits, body.query, k, False, t0)
    if body.explain:
        first.explainer = engine.explainer_name

    def events() -> Iterator[str]:
        yield sse("results", first.model_dump_json())
        n = 0
        if body.explain:
            pairs = [(engine.catalog.by_id[h.id], float(h.dense)) for h in hits]
            for i, r, _ in rationales_iter(engine, settings, body.query, pairs):
                n += 1
                yield sse("rationale", RationaleEventOut(rank=i + 1, id=hits[i].id, rationale=rationale_out(r)).model_dump_json())
        yield sse("done", StreamDoneOut(rationales=n, took_ms=round((time.perf_counter() - t0) * 1000, 2)).model_dump_json())

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


UPLOAD_ERRORS = {400: {"model": ErrorOut, "description": "broken image or decompression bomb"},
                 413: {"model": ErrorOut, "description": "upload too large"},
                 415: {"model": ErrorOut, "description": "not an image"}}


@router.post("/search/image", response_model=ResultsOut, responses=UPLOAD_ERRORS,
             summary="Items similar to an uploaded photo (optionally steered by text)")
async def search_image(image: UploadFile = File(..., description="a photo (JPEG, PNG, WebP, ...)"),
                       text: str | None = Form(None, max_length=QUERY_MAX, description="optional words to steer the search"),
                       k: int = Form(None, ge=1, le=K_MAX, description="results wanted (default from settings)"), explain: bool = Form(True),
                       engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)) -> ResultsOut:
    t0 = time.perf_counter()
    k = check_k(k, settings)
    text = (text or "").strip() or None
    data = await image.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, f"upload too large: limit is {settings.max_upload_bytes} bytes")
    try:
        pil = await run_in_threadpool(decode_image, data, settings.max_image_pixels)
    except UploadError as err:
        raise HTTPException(err.status, err.detail) from None

    def run():
        hits = engine.searcher.search_image(pil, k, None, text=text)
        label = f"photo {image.filename or 'upload'}" + (f" + \"{text}\"" if text else "")
        out = results(engine, settings, hits, text or "", k, explain, t0, label=label)
        if engine.category_head is not None:  # the photo's vector again (~ one image-tower pass) for its predicted category
            guesses = engine.category_head.predict(engine.searcher.encoder.encode_image([pil]), k=3)[0]
            out.predicted_category = [CategoryGuessOut(label=g, probability=round(p, 4)) for g, p in guesses]
        return out

    return await run_in_threadpool(run)

