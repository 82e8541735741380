"""GET /health: what is loaded (index size, encoder, explainer) and the versions serving it."""
from __future__ import annotations

import platform
from importlib import metadata

from fastapi import APIRouter, Depends

from api.deps import Engine, available_explainers, get_engine
from api.schemas import HealthOut
from api.service import shoppers

router = APIRouter(tags=["health"])


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


VERSIONS = {"whyrec": _version("whyrec"), "python": platform.python_version(), "fastapi": _version("fastapi"),
            "torch": _version("torch"), "faiss": _version("faiss-cpu")}


@router.get("/health", response_model=HealthOut, summary="Liveness and what is loaded")
def health(engine: Engine = Depends(get_engine)) -> HealthOut:
    searcher = engine.searcher
    index = getattr(searcher, "index", None)
    size = len(index) if index is not None and hasattr(index, "__len__") else getattr(index, "ntotal", len(engine.catalog))
    encoder = getattr(searcher, "encoder", None)
    return HealthOut(status="ok", items=len(engine.catalog), index_size=int(size),
                     encoder=str(getattr(encoder, "name", type(encoder).__name__)), explainer=engine.explainer_name,
                     explainers_available=available_explainers(), shoppers=shoppers(engine),
                     generation=engine.generation, loaded_at=engine.loaded_at, versions=VERSIONS)
