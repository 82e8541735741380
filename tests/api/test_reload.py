"""/admin/reload swaps index and models under load without losing a request (own server: it reloads)."""
import threading
import time

import httpx
import pytest
import yaml

from tests.api.conftest import start_server


@pytest.fixture()
def reload_server(config_file, tmp_path):
    from api.settings import load_settings

    own = tmp_path / "whyrec.yaml"  # a copy this test may break
    own.write_text(config_file.read_text())
    server = start_server(load_settings(own))
    yield server, own
    server.stop()


@pytest.mark.slow
def test_reload_under_concurrent_load_loses_no_request(reload_server, settings):
    server, _ = reload_server
    key = settings.admin_key.get_secret_value()
    statuses: list[int] = []
    errors: list[str] = []
    stop = threading.Event()
    queries = ["black dress", "striped shirt", "white sneakers", "blue jeans", "red sweater"]

    def hammer(n: int):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            i = n
            while not stop.is_set():
                try:
                    r = c.post("/search", json={"query": queries[i % len(queries)], "k": 5})
                    statuses.append(r.status_code)
                    if r.status_code != 200 or len(r.json()["results"]) != 5:
                        errors.append(r.text[:200])
                except httpx.HTTPError as err:  # a dropped connection is a lost request
                    errors.append(repr(err))
                i += 1

    workers = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for w in workers:
        w.start()
    time.sleep(1.0)
    with httpx.Client(base_url=server.url, timeout=120) as c:
        before = c.get("/health").json()["generation"]
        during = len(statuses)
        r1 = c.post("/admin/reload", headers={"X-API-Key": key})
        r2 = c.post("/admin/reload", headers={"X-API-Key": key})
    time.sleep(1.0)
    stop.set()
    for w in workers:
        w.join(timeout=60)
    assert r1.status_code == 200 and r2.status_code == 200, (r1.text, r2.text)
    assert r2.json()["generation"] == before + 2
    assert len(statuses) > during + 4, "requests kept flowing while the engines were rebuilt"
    assert errors == [] and set(statuses) == {200}
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/health").json()["generation"] == before + 2


@pytest.mark.slow
def test_failed_reload_keeps_serving_the_old_index(reload_server, settings):
    server, own = reload_server
    # warm-up: before its first request the server has both towers loaded (no request waits for a model)
    towers = server.app.state.holder.engine.searcher.encoder.towers
    assert towers._text is not None and towers._image is not None
    cfg = yaml.safe_load(own.read_text())
    cfg["index"]["dir"] = str(own.parent / "no-index-here")
    own.write_text(yaml.safe_dump(cfg))
    with httpx.Client(base_url=server.url, timeout=120) as c:
        r = c.post("/admin/reload", headers={"X-API-Key": settings.admin_key.get_secret_value()})
        assert r.status_code == 503 and "still serving generation 0" in r.json()["detail"]
        assert c.post("/search", json={"query": "dress", "k": 3}).status_code == 200
        assert c.get("/health").json()["generation"] == 0


@pytest.mark.slow
def test_reload_releases_the_old_engine_at_the_swap(settings):
    """Two engines live side by side only until the swap: the old one is gone when reload returns
    (no request holds it here), not whenever a later garbage collection happens to run."""
    import gc
    import weakref

    from api.deps import EngineHolder

    holder = EngineHolder(settings)
    holder.load()
    old = weakref.ref(holder.engine)
    gc.disable()  # only the reload itself may free it
    try:
        new = holder.reload()
        assert old() is None, "the old engine outlived the swap"
    finally:
        gc.enable()
    assert new.generation == 1 and holder.engine is new


def test_a_reload_with_nothing_changed_shares_the_engine_parts(settings):
    from api.deps import build_engine

    old = build_engine(settings, 0)
    new = build_engine(settings, 1, previous=old)
    assert new.searcher is not old.searcher and new.generation == 1
    assert new.searcher.catalog is old.searcher.catalog and new.searcher.index is old.searcher.index
    assert new.recommender is old.recommender and new.goes_with is old.goes_with
    old.goes_with_sets = ("a sets file that has changed since",)  # as if rooms.csv were rewritten
    rebuilt = build_engine(settings, 2, previous=old)
    assert rebuilt.goes_with is not old.goes_with and rebuilt.searcher.catalog is old.searcher.catalog
