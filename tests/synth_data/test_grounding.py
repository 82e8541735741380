"""The grounding checker: hand-written true and false sentences per attribute kind, synonyms,
negation, the policy on specific / independent values, quotations, and texts about two items."""
from __future__ import annotations

import pytest

from synth_data.grounding import check, check_multi, claims, clauses


def verdicts(text, product, **kw):
    r = check(text, product, **kw)
    return ({(t.kind, t.value) for t in r.supported}, {(t.kind, t.value) for t in r.contradicted},
            {(t.kind, t.value) for t in r.not_stated})


# (item id, sentence, expected ok, a (kind, value) that must land in supported / contradicted)
CASES = [
    # colour, with synonyms and families
    ("009", "It is navy.", True, ("supported", ("colour", "dark blue"))),
    ("009", "This jumper is dark blue.", True, ("supported", ("colour", "dark blue"))),
    ("009", "It is blue.", True, ("supported", ("colour", "blue"))),  # a family word is true of its member
    ("009", "It is bright red.", False, ("contradicted", ("colour", "red"))),
    ("004", "A crisp white tee.", True, ("supported", ("colour", "white"))),
    ("004", "It comes in charcoal.", False, ("contradicted", ("colour", "dark grey"))),
    # product type, with synonyms
    ("006", "These trainers are comfortable.", True, ("supported", ("product_type", "sneakers"))),
    ("006", "Nice black shoes.", True, ("supported", ("product_type", "shoes"))),
    ("006", "These boots are warm.", False, ("contradicted", ("product_type", "boots"))),
    ("009", "A cosy pullover.", True, ("supported", ("product_type", "sweater"))),
    ("009", "A classic cardigan.", False, ("contradicted", ("product_type", "cardigan"))),
    ("002", "High-waisted jeans.", True, ("supported", ("product_type", "jeans"))),
    # pattern
    ("005", "A dress with stripes.", True, ("supported", ("pattern", "striped"))),
    ("005", "A polka dot dress.", False, ("contradicted", ("pattern", "dotted"))),
    ("004", "A plain tee.", True, ("supported", ("pattern", "solid"))),
    ("004", "A tartan shirt look.", False, ("contradicted", ("pattern", "checked"))),
    # material (read from the description)
    ("004", "Made of cotton.", True, ("supported", ("material", "cotton"))),
    ("004", "Made of silk.", False, ("contradicted", ("material", "silk"))),
    ("009", "A merino knit.", True, ("supported", ("material", "wool"))),
    ("006", "Made of vegan leather.", True, ("supported", ("material", "faux leather"))),
    # department
    ("004", "A tee for men.", True, ("supported", ("department", "men"))),
    ("004", "A tee for women.", False, ("contradicted", ("department", "women"))),
    ("001", "Great for the gym.", True, ("supported", ("department", "sport"))),
    ("005", "Made for yoga.", False, ("contradicted", ("department", "sport"))),
    ("012", "For kids.", True, ("supported", ("department", "kids"))),
    # fit
    ("005", "It is relaxed and roomy.", True, ("supported", ("fit", "loose"))),
    ("005", "A figure-hugging dress.", False, ("contradicted", ("fit", "slim"))),
    ("002", "Skinny and high waisted.", True, ("supported", ("fit", "slim"))),
    ("002", "Baggy jeans.", False, ("contradicted", ("fit", "loose"))),
]


@pytest.mark.parametrize("item_id,text,ok,expect", CASES)
def test_true_and_false_sentences_per_kind(by_id, item_id, text, ok, expect):
    result = check(text, by_id[item_id])
    assert result.ok is ok, (text, result.to_dict())
    where, kv = expect
    assert kv in {(t.kind, t.value) for t in getattr(result, where)}, (text, result.to_dict())


def test_negation(by_id):
    tee, tights = by_id["004"], by_id["001"]
    s, c, _ = verdicts("It is not black.", tee)
    assert ("colour", "black") in s and not c
    s, c, _ = verdicts("It is not white.", tee)
    assert ("colour", "white") in c
    s, c, _ = verdicts("A bra without lace.", by_id["007"])
    assert ("pattern", "lace") in c or ("material", "lace") in c
    s, c, _ = verdicts("Not from the sport range.", tights)
    assert ("department", "sport") in c
    # negation stays in its clause: "No, it is dark blue" says dark blue, it does not deny it
    s, c, _ = verdicts("No, it is dark blue.", by_id["009"])
    assert ("colour", "dark blue") in s and not c
    s, c, _ = verdicts("It is not black, it is white.", tee)
    assert ("colour", "white") in s and ("colour", "black") in s and not c


def test_more_specific_than_the_catalog_is_not_stated(by_id):
    grey_hoodie = by_id["008"]  # the catalog says "Grey", not which grey
    s, c, n = verdicts("It is charcoal.", grey_hoodie)
    assert ("colour", "dark grey") in n and not c
    s, c, n = verdicts("It is not light grey.", grey_hoodie)
    assert ("colour", "light grey") in n and not c


def test_independent_value_groups(by_id):
    tee = by_id["004"]  # cotton jersey
    # a fibre the item does not state is contradicted by the fibre it does state...
    assert not check("It is made of wool.", tee).ok
    # ...but a construction is not contradicted by a fibre: the jumper is wool, is it jersey? not stated
    s, c, n = verdicts("It is jersey.", by_id["012"])
    assert ("material", "jersey") in n and not c
    # a cut says nothing of the rise, and the reverse
    s, c, n = verdicts("It has a loose fit.", by_id["001"])  # tights: high waist only
    assert ("fit", "loose") in n and not c
    # "sport" is not an audience: a sport item is neither for nor against "women"
    s, c, n = verdicts("For women.", by_id["001"])
    assert ("department", "women") in n


def test_item_without_a_kind_is_not_stated(by_id):
    s, c, n = verdicts("It is made of linen.", by_id["010"])  # the swimsuit names no material
    assert ("material", "linen") in n and not c and not s


def test_quotations_of_the_request_are_not_claims(by_id):
    tee = by_id["004"]
    r = check('You asked for "black", but it is white.', tee, request="something black")
    assert r.ok and {t.value for t in r.quoted} == {"black"} and {t.value for t in r.supported} == {"white"}
    # the same words without the request to quote are a claim
    assert not check('You asked for "black", but it is white.', tee).ok
    # a quotation that is not verbatim from the request or the catalog is judged like any text
    assert not check('The catalog says "black silk".', tee, request="something black").ok
    # quoting the item's own catalog text is fine
    assert check('The catalog calls it "Basic tee" in "soft cotton jersey".', tee).ok


def test_readings_of_one_word_count_once(by_id):
    bra = by_id["007"]
    r = check("A lace bra.", bra)
    assert r.ok and len([t for t in r.supported if t.phrase == "lace"]) == 1
    assert len(claims("lace")) == 1 and len(claims("lace")[0]) == 2  # pattern and material readings


def test_precision_and_reasons(by_id):
    r = check("A red striped dress, made of silk.", by_id["005"])
    assert len(r.supported) == 3 and len(r.contradicted) == 1
    assert r.precision == pytest.approx(0.75)
    assert r.reasons() and "material" in r.reasons()[0] and "silk" in r.reasons()[0]
    assert check("Nothing to see here.", by_id["005"]).precision == 1.0


def test_clauses_split_on_sentences_and_new_clauses():
    assert clauses("No, it is dark blue. It is not black; it is plain") == ["No", "it is dark blue", "It is not black", "it is plain"]
    assert clauses("not black, red or navy") == ["not black, red or navy"]  # a list keeps its negation
    assert clauses("similarity 0.72 here") == ["similarity 0.72 here"]


def test_check_multi_attributes_clauses_to_items(by_id):
    a, b = by_id["001"], by_id["009"]  # black sport tights, dark blue wool jumper
    text = "Item A is black and from the sport range; Item B is navy. It is made of wool. Item A fits better."
    res = check_multi(text, {"A": a, "B": b}, request="black gym wear")
    assert res["A"].ok and res["B"].ok
    assert ("colour", "black") in {(t.kind, t.value) for t in res["A"].supported}
    assert ("material", "wool") in {(t.kind, t.value) for t in res["B"].supported}  # inherited from "Item B"
    swapped = check_multi("Item A is navy; Item B is black.", {"A": a, "B": b})
    assert not swapped["A"].ok and not swapped["B"].ok
    both = check_multi("Both are black.", {"A": a, "B": b})
    assert both["A"].ok and not both["B"].ok


def test_grammar_the_vocabulary_leaves_out(by_id):
    tee, jumper, coat = by_id["004"], by_id["009"], by_id["012"]
    # a negated noun phrase with modifiers negates the modifiers: still a t-shirt
    r = check("It is not a women's t-shirt.", tee)
    assert r.ok and ("product_type", "t-shirt", False) in {(t.kind, t.value, t.negated) for t in r.supported}
    # a bare negated noun stays negated
    assert not check("It is not a t-shirt.", tee).ok
    # "not only" is not a negation
    assert check("Not only white but also soft.", tee).ok
    # the negation runs over an or-list
    assert check("It isn't a cardigan or a hoodie.", jumper).ok
    # garments to pair it with are not claims about the item
    r = check("Pair it with black jeans or a red skirt, and wear it on top of a dress.", tee)
    assert r.ok and {t.value for t in r.paired} >= {"black", "jeans", "red", "skirt", "dress"}
    # ...but what follows "with" is a claim when it is not a garment
    assert not check("Trousers with stripes.", coat).ok


LABELLED = ["grounding_labelled.jsonl", "grounding_heldout.jsonl"]


@pytest.mark.parametrize("name", LABELLED)
def test_hand_labelled_sets_are_valid_and_the_checker_agrees(name):
    """The labelled sets (bench/synth_numbers.py reports the full numbers) are well-formed, and
    the checker's reject decision stays near what was measured (a regression guard)."""
    from retrieval.vocabulary import SYNONYMS
    from synth_data.grounding_eval import default_paths, evaluate, load_items, load_labelled

    path, items_path = default_paths()
    rows, items = load_labelled(path.parent / name), load_items(items_path)
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["item"] in items and r["sentence"].strip()
        for c in r["claims"]:
            assert c["value"] in SYNONYMS[c["kind"]] and c["verdict"] in ("supported", "contradicted", "not_stated")
    out = evaluate(rows, items)
    assert out["reject_decision"]["precision"] >= 0.85 and out["reject_decision"]["recall"] >= 0.8
    assert out["per_verdict"]["supported"]["precision"] >= 0.9


def test_labelled_sets_hold_at_least_100_sentences():
    from synth_data.grounding_eval import default_paths, load_labelled

    assert len(load_labelled(default_paths()[0])) >= 100


def test_fit_words_about_a_part_are_not_the_items_fit():
    """retrieval.vocabulary.item_values (changed for grounding): 'wide shoulder straps', 'regular
    waist' describe a part; 'wide legs', 'slim fit' describe the garment."""
    from retrieval.catalog import Product
    from retrieval.vocabulary import item_values

    tights = Product("t", "Tights", "Sports tights with a high waist and wide, elasticated ribbing and wide shoulder straps.")
    assert item_values(tights)["fit"] == {"high waist"}
    assert not check("They have a loose fit.", tights).contradicted  # the cut is not stated
    trousers = Product("w", "Trousers", "Trousers with a regular waist and wide legs.")
    assert item_values(trousers)["fit"] == {"loose"}


def test_a_quote_is_exempt_only_on_word_boundaries():
    """'red' inside 'Tailored' is not a quotation of the catalog: the quoted claim is judged."""
    from retrieval.catalog import Product

    trousers = Product(id="t1", title="Tailored trousers", description="Trousers in woven fabric.",
                       attributes={"product_type": "Trousers"}, colour="Black", category=["Menswear", "Trousers"])
    r = check('It is "red".', trousers)
    assert not r.ok and ("colour", "red") in {(t.kind, t.value) for t in r.contradicted}
    assert not check('You asked for "red", but it is black.', trousers).ok  # nobody said "red"
    assert check('You asked for "red", but it is black.', trousers, request="red trousers").ok
    assert check('The catalog calls it "Tailored trousers".', trousers).ok


def test_the_sentence_around_a_quote_is_still_judged():
    """A quotation of the request is exempt as a quotation; stated of the item, it is a claim."""
    from retrieval.catalog import Product

    trousers = Product(id="t1", title="Tailored trousers", attributes={"product_type": "Trousers"}, colour="Black",
                       category=["Menswear", "Trousers"])
    for text in ('It is "red".', "They're \"red\".", 'These trousers come in "red".', 'A "red" pair of trousers.'):
        r = check(text, trousers, request="red trousers")
        assert not r.ok, text
    r = check('You asked for "red trousers"; it is black.', trousers, request="red trousers")
    assert r.ok and {t.value for t in r.quoted} == {"red", "trousers"} and ("colour", "black") in {(t.kind, t.value) for t in r.supported}
    assert not check('You asked for "red trousers"; it is white.', trousers, request="red trousers").ok


def test_item_text_keeps_only_sentences_the_catalog_backs_word_by_word():
    from retrieval.catalog import Product
    from synth_data.grounding import catalog_backed_sentences

    tee = Product(id="t", title="Fidde tee", colour="White", attributes={"product_type": "T-shirt"},
                  description="Cropped, boxy-style T-shirt in soft cotton jersey with dropped shoulders and ribbing around the neckline.")
    text = ("It is a t-shadow, which matches your request. The description mentions dropped shoulders and ribbing "
            "around the neckline. This is a hair-covered watch. It is a white t-shirt in soft cotton jersey")
    kept = catalog_backed_sentences(text, tee)
    # invented words (t-shadow, watch, hair) and request talk go; the description's own details stay
    assert kept == ("The description mentions dropped shoulders and ribbing around the neckline. "
                    "It is a white t-shirt in soft cotton jersey.")
    assert catalog_backed_sentences("It is a red t-shirt.", tee) == ""  # red is not the item's word
    repeat = "From the description: soft cotton jersey. Good to know: cotton jersey. It has dropped shoulders."
    assert catalog_backed_sentences(repeat, tee) == "From the description: soft cotton jersey. It has dropped shoulders."
    assert catalog_backed_sentences("", tee) == ""
    # a request word the item's own description uses is the item's word: "short", "fit" of a short regular-fit dress
    dress = Product(id="d", title="Short dress", colour="Black", attributes={"product_type": "Dress"},
                    description="Short dress in jersey with short sleeves and a regular fit.")
    said = ("The description mentions short sleeves and a regular fit. It falls short of your request. "
            "It is not a short dress. This dress fits you.")
    assert catalog_backed_sentences(said, dress) == "The description mentions short sleeves and a regular fit."
