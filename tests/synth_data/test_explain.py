"""The grounded explainer: evidence, honest text, determinism, the injection case, fallback."""
from __future__ import annotations

import re

import pytest

from retrieval.vocabulary import item_values
from synth_data.explain import (EXPLAINERS, GroundedExplainer, Rationale, checked_explain, gather_evidence,
                                get_explainer, register_explainer, request_terms)
from synth_data.grounding import check

REQUESTS = ["something black for the gym, not too tight", "navy jeans, nothing baggy", "a striped dress for women",
            "white trainers", "a cotton tee for men", "not black please, a wool jumper", "gift for my sister", ""]


def test_request_terms_keep_the_shoppers_words():
    rts = {(rt.term.kind, rt.term.value, rt.term.negated): rt.quote for rt in request_terms("something black for the gym, not too tight")}
    assert rts[("colour", "black", False)] == "black"
    assert rts[("department", "sport", False)] == "gym"
    assert rts[("fit", "slim", True)] == "not too tight"


def test_gather_evidence_sorts_request_terms(by_id, products):
    ev = gather_evidence("something black for the gym, not too tight", by_id["001"], score=0.8, history=products[3:6])
    assert {(r.term.kind, r.term.value) for r in ev.matched} == {("colour", "black"), ("department", "sport")}
    assert [r.quote for r in ev.unknown] == ["not too tight"]  # tights: high waist only, nothing about the cut
    assert ev.unmet == [] and ev.score == 0.8
    assert ev.history and ev.history[0].item_id == "006"  # the black sneakers share the colour
    ev = gather_evidence("something black for the gym", by_id["009"])
    assert {(r.term.kind, r.term.value) for r in ev.unmet} == {("colour", "black"), ("department", "sport")}


COLOURS = ("black", "white", "red", "blue", "green", "pink", "grey", "beige", "yellow", "orange", "brown", "purple", "navy")


def colours_said(text: str, request: str) -> set[str]:
    """A deliberately simple second checker (not the vocabulary's): colour words the text says of
    the item, leaving out spans quoting the request or a purchase's title and words after 'not'."""
    import re

    unquoted = re.sub(r'"[^"]*"', " ", text.lower())
    words = re.findall(r"[a-z]+", unquoted)
    return {w for i, w in enumerate(words) if w in COLOURS and (i == 0 or words[i - 1] != "not")}


@pytest.mark.parametrize("request_", REQUESTS)
def test_every_rationale_states_only_the_items_colour_and_names_its_facts(products, request_):
    ex = GroundedExplainer()
    for p in products:
        ev = gather_evidence(request_, p, score=-0.16, history=products[:3])
        r = ex.explain(request_, p, ev)
        assert r.backend == "grounded" and r.text and r.fallback_reason is None, r.fallback_reason
        history_colours = {h.colour.lower() for h in products[:3]}
        for colour in colours_said(r.text, request_):
            assert colour in p.colour.lower() or (colour in " ".join(history_colours) and "bought" in r.text), (p.colour, r.text)
        values = item_values(p)
        for fact in r.facts_used:
            kind, _, value = fact.partition(": ")
            if kind in values:
                assert value in values[kind], (fact, values)


@pytest.mark.parametrize("request_", REQUESTS[:4])
def test_no_scores_or_rank_claims_in_shopper_text(products, request_):
    """The search score stays in the evidence: the text claims no rank and shows no number."""
    import re

    for p in products:
        ev = gather_evidence(request_, p, score=-0.16)
        r = GroundedExplainer().explain(request_, p, ev)
        assert not re.search(r"\d\.\d|score|similarity|closest|ranks?\b", r.text, re.IGNORECASE), r.text
        assert not any(f.startswith("similarity") for f in r.facts_used)
        assert ev.to_dict()["score"] == -0.16


@pytest.mark.parametrize("claim", ["Its picture and text sit close to your request in the search (score 0.31).",
                                   "It is also among the closest matches in the image and text search (score -0.16).",
                                   "It is the best match for you.", "This one ranks first."])
def test_a_models_score_or_rank_claim_is_replaced_with_the_reason(products, claim):
    """Any explainer's text goes through `settle`: a text that cites a score or claims a rank is not
    served (the search did not rank it for the shopper's eyes), and the replacement says why."""
    from synth_data.explain import settle

    p = products[0]
    ev = gather_evidence("something to wear", p, score=0.31)
    honest = settle(Rationale(text=f"The catalog lists it as {p.title.lower()}.", facts_used=[], backend="model"),
                    "something to wear", p, ev, GroundedExplainer())
    out = settle(Rationale(text=claim, facts_used=[], backend="model"), "something to wear", p, ev, GroundedExplainer())
    assert out.backend == "grounded" and out.fallback_reason.startswith("score or rank in the text")
    assert not re.search(r"score|closest|best match|ranks", out.text, re.IGNORECASE)
    assert honest.backend == "model" or "score or rank" not in (honest.fallback_reason or "")


@pytest.mark.parametrize("text", ["Number One for you", "pick #3", "It came up In The Search.", "our Top Pick", "the HIGHEST result",
                                  "the nearest hit", "it ranked well", "scored .5", "a -1.2 shift", "Similarity is high",
                                  "Scores: 7", "the closest two results", "It ranks #1.", "a best match", "the first result"])
def test_the_quick_score_screen_never_hides_a_claim(text):
    """score_claims skips texts without any of the pattern's words; on every kind of claim it still
    finds what the full pattern finds."""
    from synth_data.grounding import _SCORE_OR_RANK, score_claims

    full = [m.group(0) for m in _SCORE_OR_RANK.finditer(text)]
    assert full and score_claims(text) == full


def test_positive_and_hard_negative_say_what_they_should(by_id):
    ex = GroundedExplainer()
    pos = ex.explain("black leggings for the gym", by_id["001"])
    assert "black" in pos.text and "sport" in pos.text and "colour: black" in pos.facts_used
    neg = ex.explain("black leggings for the gym", by_id["011"])  # a dark blue sport vest top
    assert '"black"' in neg.text and "dark blue" in neg.text  # says where it falls short, quoting the shopper
    assert "colour: dark blue" in neg.facts_used
    avoid = ex.explain("navy jeans, nothing baggy", by_id["002"])  # slim dark blue jeans
    assert "slim fit, not a loose fit" in avoid.text


def test_explanations_are_deterministic_and_vary_between_requests(by_id):
    ex = GroundedExplainer()
    a = ex.explain("a red dress", by_id["005"]).text
    assert a == ex.explain("a red dress", by_id["005"]).text
    texts = {ex.explain(f"a red dress {w}", by_id["005"]).text.split(":")[0] for w in ("please", "today", "now", "for me", "asap", "thanks")}
    assert len(texts) > 1  # several wordings across requests


def test_instructions_in_the_catalog_do_not_change_the_rationale(catalog, injected_catalog):
    ex = GroundedExplainer()
    for p, q in zip(catalog.products, injected_catalog.products):
        assert item_values(p) == item_values(q)  # the injected text names no attribute
        for request_ in REQUESTS[:4]:
            clean, injected = ex.explain(request_, p), ex.explain(request_, q)
            assert clean == injected
            assert "HACKED" not in injected.text and "instruction" not in injected.text.lower()


class _Liar:
    def explain(self, request, product, evidence=None):
        return Rationale("It is a bright red silk dress.", ["colour: red"], "liar")


class _Broken:
    def explain(self, request, product, evidence=None):
        raise RuntimeError("model not loaded")


class _Honest:
    def explain(self, request, product, evidence=None):
        return Rationale("It is white.", ["colour: white"], "honest")


class _Unverified:
    def explain(self, request, product, evidence=None):
        return Rationale("It is a black swimsuit made of linen.", [], "unverified")  # the catalog names no material


class _TemplateWithABug(GroundedExplainer):
    def compose(self, request, product, evidence, rng=None):
        return Rationale("It is a green dress.", ["colour: green"], self.backend)


def test_checked_explain_falls_back_with_a_reason(by_id):
    tee = by_id["004"]
    out = checked_explain(_Liar(), "a red dress", tee)
    assert out.backend == "grounded" and out.fallback_reason.startswith("grounding:") and "colour" in out.fallback_reason
    assert "silk" not in out.text and "red" not in colours_said(out.text, "a red dress")
    out = checked_explain(_Broken(), "a red dress", tee)
    assert out.backend == "grounded" and "model not loaded" in out.fallback_reason
    out = checked_explain(_Honest(), "a red dress", tee)
    assert out.backend == "honest" and out.fallback_reason is None and out.text == "It is white."


def test_claims_the_catalog_does_not_back_are_limited_and_reported(by_id):
    swimsuit = by_id["010"]
    out = checked_explain(_Unverified(), "a swimsuit", swimsuit)
    assert out.backend == "grounded" and out.fallback_reason.startswith("unverified:") and "linen" in out.fallback_reason
    allowed = checked_explain(_Unverified(), "a swimsuit", swimsuit, max_unverified=1)
    assert allowed.backend == "unverified" and allowed.unverified == ["material: linen"]


def test_every_fallback_carries_its_reason(by_id):
    """A wording bug in the template itself is caught: the plain catalog sentence, with the reason."""
    tee = by_id["004"]
    r = _TemplateWithABug().explain("a tee", tee)
    assert r.text == "The catalog lists it as a white t-shirt." and r.fallback_reason.startswith("grounding: colour")
    assert r.fallback_reason.count("green") >= 1
    r = checked_explain(_Liar(), "a red dress", tee, fallback=_TemplateWithABug())
    # both failures are in the reason: the model's lie and the template's own wording bug
    assert r.text.startswith("The catalog lists it as") and r.fallback_reason.count("grounding") >= 2
    assert "red" in r.fallback_reason and "green" in r.fallback_reason


def test_registry(by_id):
    assert isinstance(get_explainer("grounded"), GroundedExplainer)
    with pytest.raises(ValueError, match="unknown explainer"):
        get_explainer("nope")
    register_explainer("honest-test", _Honest)
    try:
        assert get_explainer("honest-test").explain("x", by_id["004"]).backend == "honest"
    finally:
        EXPLAINERS.pop("honest-test")


@pytest.mark.parametrize("request_", ['a "black" dress', "black\n\ndress", "ÉLÉGANT robe noire 🖤", "x" * 5000, "not", "   "])
def test_odd_requests_still_give_grounded_text(by_id, request_):
    for p in (by_id["005"], by_id["001"]):
        r = GroundedExplainer().explain(request_, p)
        assert r.text and check(r.text, p, request=request_).ok
