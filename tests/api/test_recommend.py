"""/recommend serves the configured model with checked history reasons; /items/{id}/goes-with."""
import numpy as np

from synth_data.grounding import check


def purchases_of(catalog, user):
    return {(it.item, str(it.timestamp)[:10]) for it in catalog.interactions_frame().itertuples() if it.user == user}


def test_recommend_serves_the_configured_model(live, client, shopper):
    engine = live.app.state.holder.engine
    assert engine.recommender.name == "ranker" and engine.recommender.model.kind == "ranker"
    body = client.post("/recommend", json={"user_id": shopper, "k": 5, "explain": False}).json()
    direct = engine.recommender.recommend([], 5, user=shopper)
    assert [h["id"] for h in body["results"]] == [r.id for r in direct]  # the route adds nothing of its own


def test_exclude_bought_per_request(client, catalog, shopper):
    bought = {i for i, _ in purchases_of(catalog, shopper)}
    default = client.post("/recommend", json={"user_id": shopper, "k": 8, "explain": False}).json()["results"]
    kept = client.post("/recommend", json={"user_id": shopper, "k": 8, "explain": False, "exclude_bought": False}).json()["results"]
    left_out = client.post("/recommend", json={"user_id": shopper, "k": 8, "explain": False, "exclude_bought": True}).json()["results"]
    assert [h["id"] for h in default] == [h["id"] for h in kept]  # the config's default: re-buys allowed
    assert bought & {h["id"] for h in kept}  # this shopper's own purchases rank among the best
    assert not bought & {h["id"] for h in left_out} and len(left_out) == 8


def test_reasons_point_at_real_purchases_and_pass_the_check(client, catalog, shopper):
    bought = purchases_of(catalog, shopper)
    results = client.post("/recommend", json={"user_id": shopper, "k": 8, "explain": False}).json()["results"]
    kinds = set()
    for h in results:
        r = h["reason"]
        assert r["checked"] and not r["problems"]
        kinds.add(r["kind"])
        if r["kind"] in ("bought_before", "other_colour", "like_purchase"):
            assert (r["item_id"], r["day"]) in bought  # "you bought ... in March 2020": that purchase exists
            month = np.datetime64(r["day"], "M").astype(object).strftime("%B %Y")
            assert month in r["text"]
            first = r["text"].split(".")[0] + "."
            assert check(first, catalog.by_id[r["item_id"]]).ok
    assert "bought_before" in kinds


def test_a_false_claim_is_caught_and_replaced(live, catalog, shopper):
    from api.routes.recommend import checked_reason
    from retrieval.recommenders.reasons import Claim, Reason

    engine = live.app.state.holder.engine
    item, day = sorted(purchases_of(catalog, shopper))[0]
    p = catalog.by_id[item]
    wrong = "red" if "red" not in p.colour.lower() else "green"
    bad = Reason("bought_before", f"You bought this in {wrong}.", item, day, [Claim(f"You bought this in {wrong}.", item)])
    out = checked_reason(engine, bad, {item: {day}})
    assert not out.checked and out.problems and wrong not in out.text
    dated = Reason("bought_before", "You bought it.", item, "1999-01-01", [])
    assert not checked_reason(engine, dated, {item: {day}}).checked


def test_goes_with_learns_from_baskets(client, catalog):
    baskets: dict[tuple, set] = {}
    for it in catalog.interactions_frame().itertuples():
        baskets.setdefault((it.user, str(it.timestamp)[:10]), set()).add(it.item)
    pair = next(sorted(b) for b in baskets.values() if len(b) >= 2)
    body = client.get(f"/items/{pair[0]}/goes-with", params={"k": 10}).json()
    ids = [h["id"] for h in body["results"]]
    assert pair[0] not in ids and pair[1] in ids
    partner = next(h for h in body["results"] if h["id"] == pair[1])
    assert partner["reason"]["kind"] in ("bought_together", "same_series") and partner["reason"]["text"]
    assert client.get("/items/no-such-item/goes-with").status_code == 404
