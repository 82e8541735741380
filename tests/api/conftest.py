"""A real whyrec server on 127.0.0.1 over the demo catalog, shared by the api tests.

The index comes from the session's `demo_config` (tests/conftest.py) when the demo heads are in
the repo; otherwise tiny heads are trained here on the demo catalog first (a few seconds once the
tower features are cached), so the api tests never depend on a file someone forgot to commit.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEMO_SOURCE = REPO / "data" / "demo"
DEMO_HEADS = DEMO_SOURCE / "heads"
FEATURE_CACHE = REPO / "var" / "cache" / "features"
ADMIN_KEY = "test-admin-key"
ARTIFACTS = REPO / "test-artifacts" / "api"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def search_config(request, tmp_path_factory) -> dict:
    """catalog / encoder / index sections over the demo catalog."""
    if (DEMO_HEADS / "heads.json").exists():
        return dict(request.getfixturevalue("demo_config"))
    from retrieval.encoders.lit import HeadTrainConfig, train_encoder
    from retrieval.importers import import_catalog
    from retrieval.search import build_index

    root = tmp_path_factory.mktemp("api-demo")
    catalog, _ = import_catalog("hm", DEMO_SOURCE, root / "catalog")
    train_encoder(catalog, root / "heads", HeadTrainConfig(epochs=15, dim=64, hidden=128, batch_size=128, holdout=0.0),
                  cache_dir=FEATURE_CACHE, threads=1)
    cfg = {"catalog": {"dir": str(root / "catalog")},
           "encoder": {"name": "lit", "heads": str(root / "heads"), "cache_dir": str(FEATURE_CACHE), "threads": 1},
           "index": {"dir": str(root / "index")}}
    build_index(cfg)
    return cfg


@pytest.fixture(scope="session")
def config_file(search_config, tmp_path_factory) -> Path:
    """A whyrec YAML file: the search sections, a serve: section (admin key set) and a recommend:
    section serving the learned ranker (small, for the 176 demo purchases)."""
    path = tmp_path_factory.mktemp("api-config") / "whyrec.yaml"
    recommend = {"model": "ranker", "exclude_bought": False, "item_vectors": "index",
                 "models": {"repeat": {"kind": "repeat"}, "other_colours": {"kind": "other_colours"}, "tfidf": {"kind": "tfidf"},
                            "pop_recent": {"kind": "popularity", "window_days": 28}, "content": {"kind": "content"},
                            "ranker": {"kind": "ranker", "windows": 2, "lgbm": {"n_estimators": 50, "min_child_samples": 5},
                                       "candidates": {"repeat": 20, "other_colours": 20, "tfidf": 30, "content": 30, "pop_recent": 20}}}}
    cfg = {**search_config, "serve": {"admin_key": ADMIN_KEY, "default_k": 8, "explain_cache_size": 1024}, "recommend": recommend}
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class LiveServer:
    url: str
    app: object
    server: object
    thread: threading.Thread

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 60), **kw)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_server(settings) -> LiveServer:
    """uvicorn in a thread on a free 127.0.0.1 port (the socket is bound first: no port race)."""
    import uvicorn

    from api.main import create_app

    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    deadline = time.time() + 180
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server died while starting (see the log above)")
        if time.time() > deadline:
            raise RuntimeError("the test server did not start within 180 s")
        time.sleep(0.05)
    return LiveServer(f"http://127.0.0.1:{port}", app, server, thread)


@pytest.fixture(scope="session")
def settings(config_file):
    from api.settings import load_settings

    return load_settings(config_file)


@pytest.fixture(scope="session")
def live(settings):
    server = start_server(settings)
    yield server
    server.stop()


@pytest.fixture()
def client(live):
    with live.client() as c:
        yield c


@pytest.fixture(scope="session")
def catalog(live):
    return live.app.state.holder.engine.catalog


@pytest.fixture(scope="session")
def shopper(catalog) -> str:
    """The shopper with the most purchases in the demo catalog."""
    counts: dict[str, int] = {}
    for it in catalog.interactions_frame().itertuples():
        counts[it.user] = counts.get(it.user, 0) + 1
    return max(sorted(counts), key=counts.get)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
