"""`/search/image` names the photo's likeliest product types (the shipped linear category head)."""


def test_image_search_returns_the_predicted_category(client, catalog, live):
    head = live.app.state.holder.engine.category_head
    assert head is not None, "the demo config names data/demo/heads/category"
    photos = [p for p in catalog.products if p.image_paths and p.attributes.get("product_type")][:12]
    right = 0
    for p in photos:
        with open(catalog.image_file(p), "rb") as f:
            r = client.post("/search/image", files={"image": ("x.jpg", f, "image/jpeg")}, data={"k": "2", "explain": "false"})
        assert r.status_code == 200, r.text
        guesses = r.json()["predicted_category"]
        assert len(guesses) == 3 and all(g["label"] in head.labels for g in guesses)
        assert guesses[0]["probability"] >= guesses[1]["probability"] >= guesses[2]["probability"] > 0
        right += p.attributes["product_type"] in [g["label"] for g in guesses]
    assert right >= 8, f"true type in the top 3 for only {right} of {len(photos)} demo photos"


def test_text_search_carries_no_category(client):
    body = client.post("/search", json={"query": "black dress", "k": 2, "explain": False}).json()
    assert body.get("predicted_category") is None
