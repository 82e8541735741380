"""The OpenAI-compatible chat endpoint, driven by the official `openai` client (stream and not)."""
import re

import pytest
from openai import OpenAI

from synth_data.grounding import check


@pytest.fixture()
def oa(live):
    return OpenAI(base_url=f"{live.url}/v1", api_key="not-needed", max_retries=0, timeout=60)


def named_ids(text: str) -> list[str]:
    return re.findall(r"\(item (\S+)\)", text)


def test_models_lists_whyrec(oa):
    assert [m.id for m in oa.models.list().data] == ["whyrec"]


def test_shopping_request_names_catalog_products_with_grounded_reasons(oa, catalog):
    r = oa.chat.completions.create(model="whyrec", messages=[{"role": "user", "content": "I want a black dress for a party"}])
    answer = r.choices[0].message.content
    assert r.object == "chat.completion" and r.choices[0].finish_reason == "stop" and r.usage.total_tokens > 0
    ids = named_ids(answer)
    assert len(ids) == 5 and all(i in catalog.by_id for i in ids)
    assert r.model_extra["whyrec"]["products"] == ids
    first = catalog.by_id[ids[0]]
    assert first.colour.lower() == "black" and first.title in answer
    for line, item in zip(answer.splitlines()[1:], ids):
        assert check(line.split(": ", 1)[1], catalog.by_id[item], request="I want a black dress for a party").ok, line


def test_streaming_gives_the_same_answer_in_chunks(oa):
    messages = [{"role": "user", "content": "striped t-shirt"}]
    whole = oa.chat.completions.create(model="whyrec", messages=messages).choices[0].message.content
    chunks = list(oa.chat.completions.create(model="whyrec", messages=messages, stream=True))
    assert len(chunks) > 5 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole


def follow_up(oa, question: str):
    first = oa.chat.completions.create(model="whyrec", messages=[{"role": "user", "content": "black dress"}])
    text = first.choices[0].message.content
    r = oa.chat.completions.create(model="whyrec", messages=[
        {"role": "user", "content": "black dress"}, {"role": "assistant", "content": text}, {"role": "user", "content": question}])
    return named_ids(text), r.choices[0].message.content, r.model_extra["whyrec"]


def test_product_question_the_catalog_cannot_answer(oa):
    ids, answer, meta = follow_up(oa, "Is the second one machine-washable?")
    assert meta["kind"] == "product_question" and meta["products"] == [ids[1]]
    assert "catalog does not say" in answer and "machine-washable" in answer


def test_product_question_answered_from_facts(oa, catalog):
    ids, answer, meta = follow_up(oa, "what colour is it?")
    product = catalog.by_id[ids[0]]
    assert meta["products"] == [ids[0]] and product.colour in answer and "colour" in meta["grounding"]["facts_used"]
    _, answer, _ = follow_up(oa, "is the first one for men?")
    assert answer.split(": ", 1)[1].startswith("No")  # a ladies' dress
    _, answer, _ = follow_up(oa, "is it black?")
    assert "Yes" in answer and check(answer, product).ok


def test_question_naming_an_item_id(oa, catalog):
    p = next(p for p in catalog.products if p.colour)
    r = oa.chat.completions.create(model="whyrec", messages=[{"role": "user", "content": f"What colour is {p.id}?"}])
    assert p.colour in r.choices[0].message.content


def test_chat_user_field_personalises(oa, catalog, shopper):
    r = oa.chat.completions.create(model="whyrec", user=shopper, messages=[{"role": "user", "content": "something for summer"}])
    answer, meta = r.choices[0].message.content, r.model_extra["whyrec"]
    assert meta["kind"] == "recommend" and "past purchases" in answer
    # a purchase a rationale points at is named with its id too, and listed with the others named
    bought = set(catalog.interactions and [it.item for it in catalog.interactions_frame().itertuples() if it.user == shopper])
    pointed = [i for i in re.findall(r"\(item (\S+)\)", answer) if i in bought]
    assert "bought" not in answer or pointed
    assert set(meta["named"]) == set(re.findall(r"\(item (\S+)\)", answer)) >= set(meta["products"])


def test_no_user_message_gets_help_not_an_error(oa):
    r = oa.chat.completions.create(model="whyrec", messages=[{"role": "system", "content": "be nice"}])
    assert "looking for" in r.choices[0].message.content


# ----- conversations that keep their thread (issue 12) -----
class Talk:
    """A conversation through the official client: the history is resent on every turn, as chat clients do."""

    def __init__(self, oa):
        self.oa = oa
        self.messages: list[dict] = []
        self.meta: dict = {}

    def say(self, text: str) -> str:
        self.messages.append({"role": "user", "content": text})
        r = self.oa.chat.completions.create(model="whyrec", messages=self.messages)
        answer = r.choices[0].message.content
        self.messages.append({"role": "assistant", "content": answer})
        self.meta = r.model_extra["whyrec"]
        return answer

    @property
    def listed(self) -> list[str]:
        return re.findall(r"^\d+\. .*?\(item (\S+)\)", self.messages[-1]["content"], re.M)


def values(catalog, item_id: str) -> dict:
    from retrieval.vocabulary import item_values

    return item_values(catalog.by_id[item_id])


def is_(catalog, item_id: str, kind: str, value: str) -> bool:
    from retrieval.vocabulary import Term, matches

    return bool(matches(Term(kind, value, value), values(catalog, item_id)))


def test_refinement_in_red_keeps_the_dress(oa, catalog):
    t = Talk(oa)
    t.say("I'm looking for a black dress for a party")
    first = t.listed
    assert first and all(is_(catalog, i, "colour", "black") and is_(catalog, i, "product_type", "dress") for i in first)
    answer = t.say("do you have something like that in red?")
    assert t.listed and t.meta["products"] == t.listed
    assert all(is_(catalog, i, "colour", "red") and is_(catalog, i, "product_type", "dress") for i in t.listed), answer
    assert answer.startswith("Red dresses") and f"(item {first[0]})" in answer.splitlines()[0]  # says what it understood


def test_cheaper_means_cheaper_than_what_was_shown(oa, catalog):
    t = Talk(oa)
    t.say("I need a warm grey jumper")
    low = min(catalog.by_id[i].price for i in t.listed if catalog.by_id[i].price is not None)
    answer = t.say("anything cheaper?")
    assert t.meta["turn"] == "refine" and t.listed
    assert all(catalog.by_id[i].price is not None and catalog.by_id[i].price < low for i in t.listed), answer
    assert all(is_(catalog, i, "product_type", "sweater") for i in t.listed)


def test_a_new_product_type_is_a_request_even_with_them(oa, catalog):
    t = Talk(oa)
    t.say("show me some white t-shirts")
    shirts = t.listed
    answer = t.say("now show me a black jacket that would go with them")
    assert t.meta["turn"] == "switch" and t.listed
    assert all(is_(catalog, i, "product_type", "jacket") and is_(catalog, i, "colour", "black") for i in t.listed), answer
    assert "go with" in answer.splitlines()[0] and not set(t.listed) & set(shirts)


def test_more_like_the_second_one(oa, catalog):
    t = Talk(oa)
    t.say("black hoodies")
    second = t.listed[1]
    answer = t.say("more like the second one")
    assert t.meta["turn"] == "similar" and second not in t.listed and f"(item {second})" in answer.splitlines()[0]
    assert t.listed and all(is_(catalog, i, "product_type", "hoodie") for i in t.listed)


def test_exclusion_same_but_and_pattern_refinements(oa, catalog):
    t = Talk(oa)
    t.say("a skirt for summer")
    answer = t.say("not black please")
    assert t.listed and all(is_(catalog, i, "product_type", "skirt") and not is_(catalog, i, "colour", "black") for i in t.listed), answer
    assert "not black" in answer.splitlines()[0]

    t = Talk(oa)
    t.say("a beige coat for autumn")
    t.say("same but black")
    assert t.listed and all(is_(catalog, i, "product_type", "coat") and is_(catalog, i, "colour", "black") for i in t.listed)

    t = Talk(oa)
    t.say("striped tee")
    t.say("plain ones instead")
    assert t.listed and all(is_(catalog, i, "product_type", "t-shirt") and is_(catalog, i, "pattern", "solid") for i in t.listed)

    t = Talk(oa)
    t.say("shirts for men")
    answer = t.say("checked ones please")
    assert t.listed and all(is_(catalog, i, "product_type", "shirt") and is_(catalog, i, "pattern", "checked")
                            and is_(catalog, i, "department", "men") for i in t.listed), answer


def test_show_more_never_repeats_and_price_bound_holds(oa, catalog):
    t = Talk(oa)
    t.say("trousers")
    seen = set(t.listed)
    t.say("show more")
    assert t.meta["turn"] == "more" and t.listed and not seen & set(t.listed)
    assert all(is_(catalog, i, "product_type", "trousers") for i in t.listed)
    t.say("under 0.03")
    assert t.listed and all(catalog.by_id[i].price is not None and catalog.by_id[i].price <= 0.03 for i in t.listed)


def test_questions_and_comparisons_about_the_refined_list(oa, catalog):
    t = Talk(oa)
    t.say("black dress")
    t.say("in red")
    red = t.listed
    assert red and all(is_(catalog, i, "colour", "red") for i in red)
    answer = t.say("is the second one for kids?")
    assert t.meta["turn"] == "question" and t.meta["products"] == [red[1]] and f"(item {red[1]})" in answer
    answer = t.say("what colour is it?")  # "it": the one just asked about
    assert t.meta["products"] == [red[1]] and catalog.by_id[red[1]].colour in answer
    t.say("black dress")
    shown = t.listed
    answer = t.say("which of these is cheaper?")
    priced = [i for i in shown if catalog.by_id[i].price is not None]
    cheapest = min(priced, key=lambda i: catalog.by_id[i].price)
    assert t.meta["turn"] == "compare" and re.search(r"cheapest is .*?\(item (\S+)\)", answer).group(1) == cheapest
    assert set(t.meta["products"]) <= set(shown)
    answer = t.say("is the third one machine-washable?")  # the list is still the one shown before the comparison
    assert t.meta["products"] == [shown[2]] and "does not say" in answer


def test_every_product_named_carries_its_id(oa, catalog):
    t = Talk(oa)
    for turn in ("black dress", "in red", "which of these is cheaper?", "more like the first one"):
        answer = t.say(turn)
        named = re.findall(r"\(item (\S+)\)", answer)
        assert named and set(named) <= set(catalog.by_id) and set(t.meta["products"]) <= set(named), (turn, answer)


def test_streamed_conversation_turn_matches_and_carries_products(oa):
    messages = [{"role": "user", "content": "black hoodies"}]
    first = oa.chat.completions.create(model="whyrec", messages=messages).choices[0].message.content
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "more like the first one"}]
    whole = oa.chat.completions.create(model="whyrec", messages=messages)
    chunks = list(oa.chat.completions.create(model="whyrec", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].model_extra["whyrec"]["products"] == whole.model_extra["whyrec"]["products"]


def test_requests_nothing_meets_are_answered_honestly(oa, catalog):
    t = Talk(oa)
    answer = t.say("under 0.00001")  # only a price bound, and no product that cheap
    assert not t.listed and t.meta["products"] == [] and "no products" in answer
    t = Talk(oa)
    t.say("for men")
    answer = t.say("between 5 and 1")  # every demo price is far below 1
    assert t.meta["turn"] == "refine" and not t.listed and "no " in answer.lower()
    assert not any(p.price is not None and 1 <= p.price <= 5 for p in catalog.products)
