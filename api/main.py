"""`create_app(settings)`: the whyrec HTTP service (REST, OpenAI-compatible chat, the web page).

The engine (searcher + explainer) loads once in the lifespan; `api.deps.EngineHolder` swaps it on
/admin/reload. Every error leaves as JSON with a 4xx status where the client is at fault.
"""
from __future__ import annotations

import logging
import math
from contextlib import asynccontextmanager
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from api.deps import EngineHolder, build_searcher
from api.routes import admin, chat, explain, health, items, recommend, search
from api.settings import Settings
from api.uploads import BodySizeLimit, UploadError

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and form fields around a file of max_upload_bytes


def create_app(settings: Settings | None = None, searcher_factory: Callable[[Settings, Any], Any] = build_searcher) -> FastAPI:
    settings = settings or Settings()
    holder = EngineHolder(settings, searcher_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        _set_threads(settings.threads)
        if holder.engine is None:
            await run_in_threadpool(holder.load)
        yield

    app = FastAPI(title="whyrec", version=_version(), lifespan=lifespan,
                  description="Explainable product recommender: ranked products, each with a rationale whose attribute "
                              "claims the catalog backs. Also speaks OpenAI chat completions at /v1/chat/completions.")
    app.state.settings = settings
    app.state.holder = holder

    for module in (health, items, search, recommend, explain, chat, admin):
        app.include_router(module.router)

    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, err: UploadError):
        return JSONResponse({"detail": err.detail}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):  # FastAPI's 422, safe for any input (NaN, bytes)
        return JSONResponse({"detail": _json_safe(jsonable_encoder(err.errors()))}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):  # a bug: logged with its traceback, answered as JSON
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(err).__name__}"}, status_code=500)

    static = settings.static_dir
    if static.is_dir():
        app.mount("/static", StaticFiles(directory=static), name="static")

        @app.get("/", include_in_schema=False)
        def index():
            return FileResponse(static / "index.html", headers={"Cache-Control": "no-cache"})

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema, plus the answers every request body can get before a route runs:
    400 (a body that is not valid JSON / multipart) and 413 (over the size limit)."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
    schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
        "ErrorOut", {"title": "ErrorOut", "type": "object", "required": ["detail"], "properties": {"detail": {"type": "string", "title": "Detail"}}})
    backend = schema["components"]["schemas"].get("ExplainIn", {}).get("properties", {}).get("backend")
    if backend:  # the registered backends, as an enum (the registry is only known at run time)
        from api.deps import available_explainers

        backend["anyOf"] = [{"type": "string", "enum": available_explainers()}, {"type": "null"}]
    engine = app.state.holder.engine
    example_id = engine.catalog.ids[0] if engine is not None and len(engine.catalog) else None
    for path in schema.get("paths", {}).values():
        for op in path.values():
            for param in op.get("parameters", []):  # a real id, for /docs and for fuzzers
                if param.get("name") == "item_id" and example_id:
                    param["example"] = example_id
            if "requestBody" in op:
                op["responses"].setdefault("400", {"description": "malformed request body", **error})
                op["responses"].setdefault("413", {"description": "request body too large", **error})
    app.openapi_schema = schema
    return schema


def _json_safe(x: Any) -> Any:
    """What a 422 echoes back as `input`, made JSON-safe: NaN/Infinity as text, lone surrogates replaced."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, str):
        return x.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate the client sent
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def _set_threads(n: int) -> None:
    """Threads per request, set deliberately: a request (one query: a short text through the encoder,
    one FAISS search, a few small matrix products) is too small to split across cores, so each runs
    on `n` threads (1 by default) and the service's concurrency comes from serving several requests
    at once (the threadpool). More threads per request oversubscribe the cores under load: two
    OpenMP threads stalled a search to ~8 ms when the other core was busy (DESIGN.md). torch and
    FAISS share OpenMP and torch resets it, so both are set (and FAISS again before each search);
    NumPy's BLAS gets the same limit; the ONNX query encoder takes `encoder.threads` (= this)."""
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)  # process-wide: OpenBLAS/MKL behind NumPy's matrix products
    except ImportError:  # pragma: no cover
        pass


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("whyrec")
    except metadata.PackageNotFoundError:
        return "0+unknown"

