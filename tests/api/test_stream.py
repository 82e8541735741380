"""/search/stream with the llava explainer (a tiny random LLaVA) on a real `whyrec serve` child
process (eval/server.py): the ranked items come first, then every rationale; items with cached
item text are composed, a few others are generated live, the rest fall back saying why. The web
page (real Chromium) shows the results and fills in the "why" lines."""
from __future__ import annotations

import json
import time

import httpx
import pytest
import yaml

from retrieval.catalog import Catalog
from synth_data.explain import Evidence, vet

pytestmark = pytest.mark.slow

CACHED_TEXT = "Shown here on its own."
LIVE = 2


def read_events(response) -> list[tuple[str, dict, float]]:
    """(event, data, seconds since the request) for each server-sent event."""
    from eval.server import sse_events

    t0 = time.perf_counter()
    return [(event, data, time.perf_counter() - t0) for event, data in sse_events(response)]


@pytest.fixture(scope="module")
def llava_server(search_config, tmp_path_factory):
    from eval.server import start_server

    root = tmp_path_factory.mktemp("llava-serve")
    catalog = Catalog.load(search_config["catalog"]["dir"])
    cached = [p.id for n, p in enumerate(catalog.products) if n % 2 == 0]  # every other item has offline text
    for i in cached[:20]:
        assert vet(CACHED_TEXT, "", catalog[i], Evidence(request=""))[1] is None  # the cache holds checked text only
    lines = [json.dumps({"id": i, "text": CACHED_TEXT, "model": "test-cache", "checked": True}) for i in cached]
    lines.append(json.dumps({"id": catalog.products[1].id, "text": "It is bright red.", "model": "test-cache", "checked": False}))
    (root / "item_text.jsonl").write_text("\n".join(lines) + "\n")
    cfg = {**search_config, "serve": {
        "explainer": "llava", "default_k": 8, "llava_live_items": LIVE, "llava_concurrency": 1, "warmup": False,
        "explainer_options": {"model": "tiny-random", "item_text": str(root / "item_text.jsonl"),
                              "settings": {"max_new_tokens": 12}}}}
    config = root / "whyrec.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc, url = start_server(str(config), log_path=root / "server.log")
    yield url, set(cached)
    proc.terminate()
    proc.wait(30)


def test_results_come_first_then_every_rationale_each_fallback_with_its_reason(llava_server):
    url, cached = llava_server
    with httpx.Client(base_url=url, timeout=120) as c:
        with c.stream("POST", "/search/stream", json={"query": "black dress", "k": 8}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = read_events(r)
        plain = c.post("/search", json={"query": "black dress", "k": 8}).json()
    names = [e for e, _, _ in events]
    assert names[0] == "results" and names[-1] == "done" and names[1:-1] == ["rationale"] * 8
    first = events[0][1]
    assert len(first["results"]) == 8 and all(h["rationale"] is None for h in first["results"])
    assert first["explainer"] == "llava"
    ids = [h["id"] for h in first["results"]]
    assert ids == [h["id"] for h in plain["results"]]  # the same ranking as /search
    got = {d["rank"]: d for e, d, _ in events if e == "rationale"}
    assert sorted(got) == list(range(1, 9)) and all(got[k]["id"] == ids[k - 1] for k in got)
    assert events[-1][1]["rationales"] == 8
    kinds = {"cached": 0, "live": 0, "over budget": 0}
    for rank, d in got.items():
        r = d["rationale"]
        assert r["text"].strip()
        assert r["backend"] == "llava" or r["fallback_reason"]  # every fallback says why
        if d["id"] in cached:
            kinds["cached"] += 1
            assert r["backend"] == "llava" and r["fallback_reason"] is None and r["text"].endswith(CACHED_TEXT)
        elif r["fallback_reason"] and "live budget" in r["fallback_reason"]:
            kinds["over budget"] += 1
            assert r["backend"] == "grounded" and "no cached item text" in r["fallback_reason"]
        else:
            kinds["live"] += 1
    assert kinds["live"] == min(LIVE, 8 - kinds["cached"]) and kinds["cached"] >= 1 and kinds["over budget"] >= 1, kinds
    # the composed (cached) and over-budget ones arrive at once, the live ones after them (one batched generate call)
    def is_live(d):
        reason = d["rationale"]["fallback_reason"] or ""
        return d["id"] not in cached and "live budget" not in reason

    order = [is_live(d) for e, d, _ in events if e == "rationale"]
    assert order == sorted(order) and sum(order) == kinds["live"]
    # /search answers with the same rationales (cached per request and item)
    assert {h["rank"]: h["rationale"]["text"] for h in plain["results"]} == {k: d["rationale"]["text"] for k, d in got.items()}


def test_stream_is_in_the_openapi_schema_and_validates_its_body(llava_server):
    url, _ = llava_server
    with httpx.Client(base_url=url, timeout=60) as c:
        spec = c.get("/openapi.json").json()
        op = spec["paths"]["/search/stream"]["post"]
        assert "text/event-stream" in op["responses"]["200"]["content"] and "rationale" in op["description"]
        assert c.post("/search/stream", json={"query": ""}).status_code == 422
        with c.stream("POST", "/search/stream", json={"query": "white shirt", "k": 3, "explain": False}) as r:
            events = read_events(r)
    assert [e for e, _, _ in events] == ["results", "done"] and events[-1][1]["rationales"] == 0


def test_page_shows_results_then_fills_in_the_why_lines(llava_server, tmp_path):
    import os
    import shutil

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(chromium) and os.path.exists(driver_path)):
        pytest.fail("chromium and chromedriver are needed: run `make browser`")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = llava_server
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1000"):
        opts.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        browser.get(url + "/")
        WebDriverWait(browser, 60).until(lambda d: "items" in d.find_element(By.ID, "health").text)
        browser.find_element(By.ID, "q").send_keys("black dress", Keys.ENTER)
        WebDriverWait(browser, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .card")) == 8)
        WebDriverWait(browser, 120).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#results .why.pending"))
        whys = [c.find_element(By.CSS_SELECTOR, ".why").text for c in browser.find_elements(By.CSS_SELECTOR, "#results .card")]
        assert len(whys) == 8 and all(len(w) > 10 and "writing why" not in w for w in whys), whys
        timing = browser.execute_script("return window.whyrec.timing")
        assert len(timing["whys"]) == 8 and timing["results"] <= min(timing["whys"])  # results shown before any why line
        WebDriverWait(browser, 30).until(lambda d: "explanations in" in d.find_element(By.ID, "status").text)
    finally:
        browser.quit()
