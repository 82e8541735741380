"""Every read endpoint against a real server over the demo catalog and index."""
import io

from PIL import Image

from synth_data.grounding import check


def test_health_reports_what_is_loaded(client, catalog):
    h = client.get("/health").json()
    assert h["status"] == "ok"
    assert h["items"] == len(catalog) == h["index_size"]
    assert h["encoder"] == "lit" and h["explainer"] == "grounded" and "grounded" in h["explainers_available"]
    assert h["shoppers"] > 0 and h["versions"]["torch"]


def test_item_and_its_photo(client, catalog):
    p = next(p for p in catalog.products if p.image_paths)
    item = client.get(f"/items/{p.id}").json()
    assert item["id"] == p.id and item["title"] == p.title and item["image_url"] == f"/items/{p.id}/image"
    r = client.get(item["image_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size[0] > 0


def test_search_ranks_matching_items_with_grounded_rationales(client, catalog):
    r = client.post("/search", json={"query": "black dress", "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["k"] == 5 and len(body["results"]) == 5 and body["explainer"] == "grounded"
    top = body["results"][0]
    assert top["colour"].lower() == "black" and "dress" in top["attributes"]["product_type"].lower()
    assert top["matched"] == ["black", "dress"]
    for rank, hit in enumerate(body["results"], 1):
        assert hit["rank"] == rank and hit["rationale"]["backend"] == "grounded"
        verdict = check(hit["rationale"]["text"], catalog.by_id[hit["id"]], request="black dress")
        assert verdict.ok, (hit["rationale"]["text"], verdict.reasons())
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_search_without_explanations_and_with_filters(client, catalog):
    body = client.post("/search", json={"query": "top", "k": 6, "explain": False, "filters": {"colour": "white"}}).json()
    assert body["results"] and all(h["rationale"] is None for h in body["results"])
    assert all("white" in catalog.by_id[h["id"]].colour.lower() for h in body["results"])


def test_image_search_finds_the_photographed_item_first(client, catalog):
    p = next(p for p in catalog.products if p.image_paths)
    with open(catalog.image_file(p), "rb") as f:
        r = client.post("/search/image", files={"image": ("photo.jpg", f, "image/jpeg")}, data={"k": "4"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"][0]["id"] == p.id and len(body["results"]) == 4
    assert body["request"] == "" and "photo.jpg" in body["label"]
    assert all(h["rationale"] for h in body["results"])


def test_image_search_steered_by_text(client, catalog):
    p = next(p for p in catalog.products if p.image_paths)
    with open(catalog.image_file(p), "rb") as f:
        body = client.post("/search/image", files={"image": ("x.jpg", f, "image/jpeg")}, data={"text": "black", "k": "5"}).json()
    assert body["request"] == "black"
    assert sum("black" in h["matched"] for h in body["results"]) >= 3


def test_similar_excludes_the_item_itself(client, catalog):
    p = catalog.products[0]
    body = client.get(f"/items/{p.id}/similar", params={"k": 5, "explain": True}).json()
    ids = [h["id"] for h in body["results"]]
    assert len(ids) == 5 and p.id not in ids
    assert all(h["rationale"] for h in body["results"]) and p.title in body["label"]


def test_recommend_for_a_shopper_points_at_their_history(client, catalog, shopper):
    bought = {it.item for it in catalog.interactions_frame().itertuples() if it.user == shopper}
    body = client.post("/recommend", json={"user_id": shopper, "k": 6, "exclude_bought": True}).json()
    assert len(body["results"]) == 6
    assert not bought & {h["id"] for h in body["results"]}  # asked to leave bought items out
    assert all(h["because"] in bought for h in body["results"])
    texts = " ".join(h["rationale"]["text"] for h in body["results"])
    assert "bought" in texts  # "Like "...", which you bought before, ..."


def test_recommend_from_a_history_blended_with_a_query(client, catalog):
    history = [p.id for p in catalog.products[:3]]
    plain = client.post("/recommend", json={"history": history, "k": 5, "explain": False}).json()
    steered = client.post("/recommend", json={"history": history, "k": 5, "query": "black", "explain": False}).json()
    assert [h["id"] for h in plain["results"]] != [h["id"] for h in steered["results"]]
    assert sum("black" in h["matched"] for h in steered["results"]) >= 3


def test_explain_returns_rationale_evidence_and_backend(client, catalog, shopper):
    p = next(p for p in catalog.products if p.colour.lower() == "black")
    body = client.post("/explain", json={"item_id": p.id, "query": "black", "user_id": shopper}).json()
    assert body["backend"] == "grounded" and body["item"]["id"] == p.id
    assert [m["value"] for m in body["evidence"]["matched"]] == ["black"]
    assert isinstance(body["evidence"]["score"], float) and "colour" in body["evidence"]["facts"]
    assert check(body["rationale"]["text"], p, request="black").ok
    alone = client.post("/explain", json={"item_id": p.id}).json()
    assert alone["evidence"]["matched"] == [] and alone["rationale"]["text"]


def test_explanations_are_cached_per_request_item_and_backend(client, live, catalog):
    cache = live.app.state.holder.engine.cache
    query = "striped shirt cached"
    client.post("/search", json={"query": query, "k": 3})
    hits_before = cache.hits
    again = client.post("/search", json={"query": query, "k": 3}).json()
    assert cache.hits - hits_before == 3
    detail = client.post("/explain", json={"item_id": again["results"][0]["id"], "query": query}).json()
    assert detail["rationale"]["text"] == again["results"][0]["rationale"]["text"]


def test_users_lists_shoppers_most_active_first(client, shopper):
    users = client.get("/users", params={"limit": 5}).json()
    assert users[0]["id"] == shopper
    counts = [u["purchases"] for u in users]
    assert counts == sorted(counts, reverse=True)


def test_users_last_is_the_date_of_the_last_purchase(client, catalog):
    last: dict[str, object] = {}
    for it in catalog.interactions_frame().itertuples():
        last[it.user] = max(last.get(it.user, it.timestamp), it.timestamp)
    users = client.get("/users", params={"limit": 20}).json()
    assert users
    for u in users:
        assert u["last"] == last[u["id"]].strftime("%Y-%m-%d"), u


def test_web_page_and_its_assets_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text and "http" not in page.text.replace("http-equiv", "")  # no CDN
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


def test_openapi_documents_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/health", "/items/{item_id}", "/items/{item_id}/image", "/search", "/search/image", "/items/{item_id}/similar",
                 "/recommend", "/explain", "/v1/chat/completions", "/admin/reload"):
        assert path in paths
    writers = [(p, m) for p, ops in paths.items() for m in ops if m in ("put", "patch", "delete")]
    assert writers == []



def test_explanations_weigh_the_purchases_most_like_the_item(live, settings, shopper):
    from api.service import history_evidence, shopper_history

    engine = live.app.state.holder.engine
    history = shopper_history(engine, settings, shopper, None)
    assert len(history) > settings.explain_history
    item = engine.catalog.ids[0]
    picked = history_evidence(engine, item, history, settings.explain_history)
    index = engine.searcher.index
    sims = dict(zip(history, index.scores(index.vector(item), history)))
    assert len(picked) == settings.explain_history
    assert sorted(sims.values(), reverse=True)[: len(picked)] == [sims[i] for i in picked]
