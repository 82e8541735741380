"""Decoding under the item's facts: a tiny random LLaVA pushed towards a contradicting colour word
(a sequence bias on its logits) writes it without the constraint and never with it, while the
item's own values stay writable."""
from __future__ import annotations

import pytest
from PIL import Image

from retrieval.catalog import Product
from retrieval.vocabulary import item_values
from synth_data.explain import gather_evidence
from synth_data.grounding import check, forbidden_phrases

from llava_tuning.generate import FactConstraint, GenerationSettings, Generator, LlavaExplainer
from llava_tuning.presets import create_model


@pytest.fixture(scope="module")
def bundle():
    return create_model("tiny-random")


def trousers(tmp_path) -> Product:
    path = tmp_path / "black.jpg"
    Image.new("RGB", (48, 72), (10, 10, 10)).save(path)
    return Product(id="t1", title="Tailored trousers", description="Trousers in woven fabric with a crease.",
                   attributes={"colour": "Black", "product_type": "Trousers", "index_group": "Ladieswear"},
                   category=["Ladieswear", "Trousers"], colour="Black", image_paths=[str(path)])


def push(bundle, words: list[str], bias: float = 30.0) -> None:
    """Make the model want to write `words` (every spelling's tokens, prefix by prefix)."""
    tok = bundle.processor.tokenizer
    seqs = {}
    for w in words:
        ids = tuple(tok(w, add_special_tokens=False)["input_ids"])
        for n in range(1, len(ids) + 1):
            seqs[ids[:n]] = bias * n  # the longer the written prefix, the stronger the pull to finish the word
    bundle.model.generation_config.sequence_bias = seqs


def said(text: str, word: str) -> bool:
    return word in text.lower()


def test_the_constraint_blocks_a_contradicting_multi_token_word_the_model_would_write(bundle, tmp_path):
    tok = bundle.processor.tokenizer
    assert len(tok(" red", add_special_tokens=False)["input_ids"]) > 1  # the tiny tokenizer splits it: a multi-token word
    p = trousers(tmp_path)
    ex = LlavaExplainer(bundle=bundle, settings=GenerationSettings(max_new_tokens=12, repetition_penalty=1.0))
    conv = [[{"from": "human", "value": "<image>\nWhy does it fit?"}]] * 2
    imgs = [Image.new("RGB", (48, 72), (10, 10, 10))] * 2
    push(bundle, [" red", " Red"])
    try:
        free = ex.generator.generate(conv, imgs)
        banned = ex.banned("black trousers", p, gather_evidence("black trousers", p))
        assert "red" in banned and "black" not in banned
        held = ex.generator.generate(conv, imgs, banned=[banned, []])
    finally:
        bundle.model.generation_config.sequence_bias = None
    assert all(said(t, "red") for t in free)  # the push works: unconstrained, the model writes "red"
    assert not said(held[0], "red")  # constrained by the black item's facts: never
    assert said(held[1], "red")  # the constraint is per row: the unconstrained row still writes it


def test_the_items_true_values_are_never_blocked(bundle, tmp_path):
    p = trousers(tmp_path)
    ex = LlavaExplainer(bundle=bundle, settings=GenerationSettings(max_new_tokens=16, repetition_penalty=1.0))
    banned = ex.banned("red trousers", p, gather_evidence("red trousers", p))
    for word in ("black", "trousers"):  # pushed towards its own values, the constrained model writes them
        push(bundle, [" " + word])
        try:
            out = ex.generator.generate([[{"from": "human", "value": "<image>\nWhy does it fit?"}]],
                                        [Image.new("RGB", (48, 72), (10, 10, 10))], banned=[banned])[0]
        finally:
            bundle.model.generation_config.sequence_bias = None
        assert said(out, word), out
    constraint = FactConstraint(bundle.processor.tokenizer, [banned])
    tok = bundle.processor.tokenizer
    for word in (" black", " Black", " trousers", "black"):
        ids = tok(word, add_special_tokens=False)["input_ids"]
        prompt = tok(" it is", add_special_tokens=False)["input_ids"]
        for n in range(len(ids)):  # no token of the item's own words is blocked at any point of writing them
            assert ids[n] not in constraint.blocked(0, prompt + ids[:n]), (word, n)


def test_spellings_capitalised_and_after_a_quote_are_blocked_but_not_inside_other_words(bundle):
    tok = bundle.processor.tokenizer
    constraint = FactConstraint(tok, [["red"]])
    start = tok(" it is", add_special_tokens=False)["input_ids"]
    for text in (" red", " Red", " RED", '"red', "\nRed"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        prefix = start + ids[:-1]
        assert ids[-1] in constraint.blocked(0, prefix), text
    # the bare spelling inside another word ("bo" + "re" + "d": "bored") is not the word: not blocked
    bare = tok("red", add_special_tokens=False)["input_ids"]
    inside = start + tok(" bo", add_special_tokens=False)["input_ids"] + bare[:-1]
    assert bare[-1] not in constraint.blocked(0, inside)
    after_quote = start + tok(' "', add_special_tokens=False)["input_ids"] + bare[:-1]
    assert bare[-1] in constraint.blocked(0, after_quote)


def test_forbidden_phrases_follow_the_checker(tmp_path):
    p = trousers(tmp_path)
    values = item_values(p)
    banned = forbidden_phrases(values)
    assert {"red", "dark red", "navy", "dress", "skirt", "striped"} <= set(banned)
    assert not {"black", "trousers", "tailored"} & set(banned)
    for phrase in banned[:: max(1, len(banned) // 60)]:  # every blocked phrase is one the checker would refuse
        result = check(f"It is {phrase}.", p)
        assert result.contradicted or result.not_stated, phrase
    # words the request names stay writable for an honest misfit sentence ...
    asked = forbidden_phrases(values, "a red dress")
    assert "red" not in asked and "crimson" not in asked and "dress" not in asked and "navy" in asked
    # ... and the post-check still refuses them as claims, while it lets the honest sentence through
    assert check("It is red.", p, request="a red dress").contradicted
    assert not check('You asked for "red", but it is black.', p, request="a red dress").contradicted
    assert not check("It is not red; it is black.", p, request="a red dress").contradicted
    # a purchased item's title may be quoted: its words are not blocked
    assert "dress" not in forbidden_phrases(values, "", ["Black party dress"])


def test_live_serving_composes_like_the_cache_and_blocks_even_the_requests_contradicting_words(bundle, tmp_path):
    """explain_iter's live items: the model writes about the item (no request in its turn), under the
    item's facts with no word exempt, so "red" is never written for a black item even when the shopper
    asked for red; the fit/misfit part is the template's, composed as for cached item text."""
    p = trousers(tmp_path)
    ex = LlavaExplainer(bundle=bundle, settings=GenerationSettings(max_new_tokens=12, repetition_penalty=1.0), live_items=None)
    written: list[list[str]] = []
    real = ex.generator.generate

    def spy(convs, images, settings=None, banned=None):
        out = real(convs, images, settings, banned)
        written.append(out)
        return out

    ex.generator.generate = spy
    push(bundle, [" red", " Red"])
    try:
        free = real([[{"from": "human", "value": "<image>\nWhy does it fit?"}]], [Image.new("RGB", (48, 72), (10, 10, 10))])[0]
        (_, r), = ex.explain_iter([("red trousers", p, None)])
    finally:
        bundle.model.generation_config.sequence_bias = None
    assert said(free, "red")  # the push works
    assert len(written) == 1 and not said(written[0][0], "red")  # the request word is blocked too: it contradicts the item
    assert "red" in ex.item_banned(p) and "red" not in ex.banned("red trousers", p, None)  # only an answer to the shopper's words keeps it
    ev = gather_evidence("red trousers", p)
    head = ex.fallback.compose("red trousers", p, ev).text
    assert r.text.startswith(head)  # the request's part is the template's, whatever the model wrote
    assert r.text == ex.from_words("red trousers", p, ev, written[0][0]).text  # one composition, live or cached
    assert not check(r.text, p, request="red trousers").contradicted
