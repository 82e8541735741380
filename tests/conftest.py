"""Shared fixtures: the bundled demo catalog imported, encoded and indexed once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that spin while waiting turned a 0.5 s FAISS test into 43 s on a busy 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
DEMO_SOURCE = REPO / "data" / "demo"
DEMO_HEADS = DEMO_SOURCE / "heads"
HM_DIR = Path(os.environ.get("WHYREC_HM_DIR", REPO.parent / "shared" / "data" / "hm"))


@pytest.fixture(scope="session")
def demo_config(tmp_path_factory) -> dict:
    """A config (as a dict) whose catalog and index are built from data/demo in a temp folder."""
    from retrieval.importers import import_catalog
    from retrieval.search import build_index

    root = tmp_path_factory.mktemp("demo")
    import_catalog("hm", DEMO_SOURCE, root / "catalog")
    cfg = {
        "catalog": {"dir": str(root / "catalog")},
        "encoder": {"name": "lit", "heads": str(DEMO_HEADS), "cache_dir": str(REPO / "var" / "cache" / "features"),
                    "category_head": str(DEMO_HEADS / "category")},
        "index": {"dir": str(root / "index")},
        "search": {"attribute_weight": 1.0},
    }
    build_index(cfg)
    return cfg


@pytest.fixture(scope="session")
def demo_searcher(demo_config):
    from retrieval.search import Searcher

    return Searcher.from_config(demo_config)
