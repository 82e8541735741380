"""POST /admin/reload: load a rebuilt index and models beside the running ones, then swap. The
only endpoint that changes anything; it needs the API key from settings."""
from __future__ import annotations

import hmac
import time

from fastapi import APIRouter, Depends, HTTPException, Security
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool

from api.deps import EngineHolder, get_holder, get_settings
from api.schemas import ErrorOut, ReloadOut
from api.settings import Settings

router = APIRouter(tags=["admin"])
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the admin key from settings (admin_key)")


def require_admin(key: str | None = Security(api_key_header), settings: Settings = Depends(get_settings)) -> None:
    if not settings.admin_enabled:
        raise HTTPException(401, "admin is disabled: no admin_key is configured", headers={"WWW-Authenticate": "APIKey"})
    if not key or not hmac.compare_digest(key.encode(), settings.admin_key.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong X-API-Key", headers={"WWW-Authenticate": "APIKey"})


@router.post("/admin/reload", response_model=ReloadOut, dependencies=[Depends(require_admin)],
             responses={401: {"model": ErrorOut, "description": "no or wrong API key"},
                        503: {"model": ErrorOut, "description": "the new index could not be loaded; the old one keeps serving"}},
             summary="Reload index and models without dropping requests")
async def reload(holder: EngineHolder = Depends(get_holder)) -> ReloadOut:
    t0 = time.time()
    try:
        engine = await run_in_threadpool(holder.reload)
    except (FileNotFoundError, ValueError, OSError, KeyError) as err:
        raise HTTPException(503, f"reload failed, still serving generation {holder.engine.generation}: {err}") from None
    return ReloadOut(status="reloaded", generation=engine.generation, items=len(engine.catalog), seconds=round(time.time() - t0, 3))
