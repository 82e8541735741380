"""Issue 11's quality measures: the word-list checker (independent of synth_data.grounding),
informativeness, held-out pairs (half misfits, only held-out groups) and the rationale metrics."""
from __future__ import annotations

import pytest

from eval.explain_eval import WordListChecker, heldout_pairs, informativeness, rationale_quality
from retrieval.catalog import Catalog, Product
from synth_data.tasks import split_of
from tests.synth_data.conftest import ROWS, make_product


def _p(pid="1", colour="Dark Blue", master="Blue", ptype="Sweater", pattern="Solid", desc="Jumper in a soft knit. Soft brushed inside."):
    return Product(id=pid, title="t", description=desc, colour=colour,
                   attributes={"colour": colour, "colour_master": master, "product_type": ptype, "pattern": pattern})


@pytest.fixture(scope="module")
def checker():
    return WordListChecker([_p(), _p("2", "Red", "Red", "Dress", "Stripe"), _p("3", "Black", "Black", "Belt", "Solid"),
                            _p("4", "Light Pink", "Pink", "T-shirt", "Dot")])


def test_wordlist_checker_judges_colour_type_and_pattern(checker):
    jumper = _p()
    assert checker.judge("It is a dark blue sweater.", jumper)[:2] == (2, 0)
    assert checker.judge("It is a blue sweater.", jumper)[:2] == (2, 0)  # the shade's master colour
    good, bad, wrong = checker.judge("It is a red striped dress.", jumper)
    assert good == 0 and bad == 3 and set(wrong) == {"colour: red", "pattern: striped", "product_type: dress"}
    assert checker.judge("It is plain.", jumper)[:2] == (1, 0) and checker.judge("It is dotted.", jumper)[:2] == (0, 1)


def test_wordlist_checker_skips_quotes_negations_and_later_type_words(checker):
    jumper = _p()
    assert checker.judge('You asked for "red", but it is dark blue.', jumper)[:2] == (1, 0)
    assert checker.judge("It is not red. It is not a dress.", jumper)[:2] == (0, 0)
    assert checker.judge("A sweater with a belt.", jumper)[:2] == (1, 0)  # the belt is a part, not the item


def test_informativeness_counts_description_facts_the_request_did_not_name():
    jumper = _p()
    assert informativeness("It is soft brushed inside and a soft knit jumper.", jumper, "a blue sweater") == 2
    assert informativeness("It is brushed inside.", jumper, "something brushed inside") == 0
    assert informativeness("It is a dark blue sweater.", jumper, "a blue sweater") == 0


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    image_dir = tmp_path_factory.mktemp("images")
    rows = [(f"{r[0]}{k}", r[1], r[2], r[3], r[4], f"{r[5]}-{k}", r[6]) for k in range(6) for r in ROWS]
    return Catalog([make_product(r, image_dir) for r in rows], root=image_dir)


def test_heldout_pairs_are_half_misfits_from_heldout_groups_only(catalog):
    pairs = heldout_pairs(catalog, 0.2, 0.4, 12, seed=1)
    assert len(pairs) >= 8
    assert all(split_of(catalog[p["item_id"]], 0.2, heldout_fraction=0.4) == "heldout" for p in pairs)
    misfits = [p for p in pairs if not p["fits"]]
    assert abs(len(misfits) - len(pairs) / 2) <= 1 and all(p["unmet"] for p in misfits)
    assert len({p["item_id"] for p in pairs}) == len(pairs)
    assert pairs == heldout_pairs(catalog, 0.2, 0.4, 12, seed=1)  # the same pairs for every system


def test_rationale_quality_scores_honesty_and_falsehoods(catalog, checker):
    pairs = heldout_pairs(catalog, 0.2, 0.4, 8, seed=1)
    fit = next(p for p in pairs if p["fits"])
    misfit = next(p for p in pairs if not p["fits"])
    item = catalog[misfit["item_id"]]
    wrong_colour = "purple" if item.colour.lower() != "purple" else "orange"
    rows = [{**fit, "raw": "Nice.", "served": "Nice.", "fallback_reason": None},
            {**misfit, "raw": f"It is {wrong_colour}, exactly what you want.", "served": f'It does not fit: you asked for "{misfit["request"]}", but it is not that.',
             "fallback_reason": "grounding: colour"}]
    out = rationale_quality(rows, catalog, WordListChecker(catalog.products), bootstrap=50)
    assert out["raw"]["honest_on_misfits"]["mean"] == 0.0 and out["served"]["honest_on_misfits"]["mean"] == 1.0
    assert out["raw"]["hallucination_rate"]["mean"] == 0.5 and out["served"]["hallucination_rate"]["mean"] == 0.0
    assert out["raw"]["claim_precision_project"]["pooled"] == 0.0
    assert out["fallback_rate"]["mean"] == 0.5
