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
    assert r.model_extra["whyrec"]["kind"] == "recommend" and "past purchases" in r.choices[0].message.content


def test_no_user_message_gets_help_not_an_error(oa):
    r = oa.chat.completions.create(model="whyrec", messages=[{"role": "system", "content": "be nice"}])
    assert "looking for" in r.choices[0].message.content
