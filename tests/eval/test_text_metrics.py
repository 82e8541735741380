"""Explanation metrics against hand-worked values (see comments)."""
import json
import math
from dataclasses import dataclass, field

import pytest

from eval import text_metrics as T
from eval.explain_eval import evaluate_explanations, explain_markdown, load_checker, read_jsonl, references_from_instructions
from retrieval.catalog import Catalog, Product
from retrieval.vocabulary import extract_terms, item_values, matches

HYP = "the cat sat on the mat"
REF = "the cat is on the mat"


def test_bleu_hand_computed():
    # clipped precisions: 1-gram 5/6, 2-gram 3/5, 3-gram 1/4, 4-gram 0/3; equal lengths: no brevity penalty
    assert T.corpus_bleu([HYP], [[REF]], 1) == pytest.approx(5 / 6)
    assert T.corpus_bleu([HYP], [[REF]], 2) == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert T.corpus_bleu([HYP], [[REF]], 3) == pytest.approx(0.5)
    assert T.corpus_bleu([HYP], [[REF]], 4) == 0.0
    # a 2-word hypothesis of a 6-word reference: precision 1, brevity penalty exp(1 - 6/2)
    assert T.corpus_bleu(["the cat"], [[REF]], 1) == pytest.approx(math.exp(-2))
    # the closest reference length counts, and n-gram counts clip at the max over references
    assert T.corpus_bleu(["the the the"], [["the cat", "the the dog"]], 1) == pytest.approx(2 / 3)
    assert T.corpus_bleu([REF], [[REF]], 4) == pytest.approx(1.0)


def test_rouge_hand_computed():
    assert T.rouge_n(HYP, REF, 1)["f"] == pytest.approx(5 / 6)  # the x2, cat, on, mat
    assert T.rouge_n(HYP, REF, 2) == pytest.approx({"p": 0.6, "r": 0.6, "f": 0.6})
    # LCS: the cat on the mat (5 of 6 words)
    assert T.lcs_length(T.words(HYP), T.words(REF)) == 5
    assert T.rouge_l(HYP, REF)["f"] == pytest.approx(5 / 6)
    # asymmetric lengths: hyp 2 words inside a 6-word ref: P 1, R 1/3, F 0.5
    assert T.rouge_l("cat mat", REF) == pytest.approx({"p": 1.0, "r": 1 / 3, "f": 0.5})
    assert T.rouge_scores(HYP, ["dog", REF])["rouge2"] == pytest.approx(0.6)


def test_diversity_and_features():
    assert T.unique_sentence_ratio(["A nice dress. Fits well.", "A nice dress! In black."]) == 0.75
    assert T.distinct_n(["a a b"], 1) == pytest.approx(2 / 3)
    assert T.features("A black dress, not red.") == {("colour", "black"), ("product_type", "dress")}
    gen = [{("colour", "black")}, {("colour", "red")}]
    assert T.feature_match_ratio(gen, [{("colour", "black")}, {("colour", "blue")}]) == 0.5
    assert T.feature_coverage_ratio(gen, {("colour", c) for c in ("black", "red", "blue")} | {("product_type", "dress")}) == 0.5
    # overlaps of pairs: ({a,b},{a}) 1, ({a,b},{c}) 0, ({a},{c}) 0
    assert T.feature_diversity([{"a", "b"}, {"a"}, {"c"}]) == pytest.approx(1 / 3)
    many = [{"a", "b"}, {"a"}, {"c"}] * 30
    exact = T.feature_diversity(many)
    assert abs(T.feature_diversity(many, max_pairs=2000) - exact) < 0.05


@dataclass
class Result:
    supported: list = field(default_factory=list)
    contradicted: list = field(default_factory=list)
    not_stated: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.contradicted

    @property
    def precision(self):
        n = len(self.supported) + len(self.contradicted)
        return len(self.supported) / n if n else 1.0


def vocab_check(text, product):
    """The grounding contract computed directly with the shared vocabulary (stands in until synth merges)."""
    vals = item_values(product)
    r = Result()
    for t in extract_terms(text):
        m = matches(t, vals)
        (r.not_stated if m is None else r.supported if m else r.contradicted).append(t)
    return r


def catalog():
    return Catalog([
        Product("1", "Slim jeans", "Jeans in washed denim.", {"product_type": "Trousers", "colour": "Black"}, colour="Black"),
        Product("2", "Jersey dress", "Short dress in soft jersey.", {"product_type": "Dress", "colour": "Red"}, colour="Red"),
    ])


def test_evaluate_explanations_per_backend(tmp_path):
    recs = [
        {"item_id": "2", "text": "A red dress.", "backend": "grounded", "reference": "A short red dress in jersey."},
        {"item_id": "1", "text": "Black trousers.", "backend": "grounded", "reference": "Black slim jeans."},
        {"item_id": "2", "text": "A blue dress.", "backend": "llava", "reference": "A short red dress in jersey."},
        {"item_id": "1", "text": "A blue dress.", "backend": "llava", "reference": "Black slim jeans."},
    ]
    res = evaluate_explanations(recs, catalog(), vocab_check, bootstrap=100)
    json.dumps(res)
    g, l = res["grounded"], res["llava"]
    assert g["hallucination_rate"]["mean"] == 0.0 and g["grounding_precision"]["mean"] == 1.0
    # "a blue dress" for the red dress: dress supported, blue contradicted -> precision 1/2; for the jeans both wrong
    assert l["grounding_precision"]["mean"] == pytest.approx((0.5 + 0.0) / 2)
    assert l["hallucination_rate"]["mean"] == 1.0
    assert l["unique_sentence_ratio"] == 0.5 and g["unique_sentence_ratio"] == 1.0
    # truth features from references: {red, dress} and {black, jeans, ...}; grounded names red/dress and black
    assert g["feature_match_ratio"] == 1.0 and l["feature_match_ratio"] == 0.5
    assert g["bleu1"]["mean"] > l["bleu1"]["mean"] and g["rouge1"]["mean"] > l["rouge1"]["mean"]
    assert "| grounded | 2 |" in explain_markdown(res)
    with pytest.raises(ValueError):
        evaluate_explanations([{"item_id": "9", "text": "x"}], catalog(), None)


def test_references_from_instruction_records(tmp_path):
    inst = [{"id": "a1", "item_id": "2", "image": "/x.jpg", "kind": "describe",
             "conversations": [{"from": "human", "value": "<image>\nDescribe it."}, {"from": "gpt", "value": "A short red dress."}]}]
    refs = references_from_instructions(inst)
    assert refs == {"id:a1": ["A short red dress."], "item:2": ["A short red dress."]}
    res = evaluate_explanations([{"item_id": "2", "text": "A short red dress.", "id": "a1"}], catalog(), None, refs, bootstrap=20)
    assert res["unknown"]["bleu1"]["mean"] == pytest.approx(1.0) and "grounding_precision" not in res["unknown"]
    p = tmp_path / "bad.jsonl"
    p.write_text('{"item_id": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(p)
    with pytest.raises(ValueError, match="not available"):
        load_checker("no_such_module:check")


def test_parse_backend():
    from eval.explain_eval import parse_backend

    assert parse_backend("grounded") == ("grounded", "grounded", {})
    assert parse_backend("llava:adapter=a/b,max_new_tokens=40") == ("llava:adapter=a/b,max_new_tokens=40", "llava",
                                                                    {"adapter": "a/b", "max_new_tokens": "40"})
    assert parse_backend("tuned=llava:adapter=x") == ("tuned", "llava", {"adapter": "x"})


def test_request_reaches_a_checker_that_takes_it():
    seen = []

    def check(text, product, request=None):
        seen.append(request)
        return Result()

    T.grounding_scores(check, "a red dress", catalog()["2"], request="red dress please")
    T.grounding_scores(vocab_check, "a red dress", catalog()["2"], request="red dress please")
    assert seen == ["red dress please"]


def test_generate_with_the_grounded_explainer_and_real_checker():
    """synth_data's template explainer and grounding checker, end to end (they never contradict the catalog)."""
    pytest.importorskip("synth_data.explain")
    from eval.explain_eval import generate_explanations

    inst = [{"id": f"r{i}", "item_id": pid, "kind": "rationale", "meta": {"request": req},
             "conversations": [{"from": "human", "value": f"<image>\nA shopper asks: \"{req}\""}, {"from": "gpt", "value": ref}]}
            for i, (pid, req, ref) in enumerate([("2", "a red dress", "This red dress matches: it is a dress in red."),
                                                  ("1", "black jeans", "These are black jeans, as you asked."),
                                                  ("1", "a white shirt", "This is not a shirt and it is black, not white.")])]
    recs = generate_explanations(inst + [{"id": "q", "item_id": "2", "kind": "question", "meta": {"request": "x"}}],
                                 catalog(), ["grounded"], kinds=["rationale"])
    assert len(recs) == 3 and all(r["backend"] == "grounded" and r["text"] for r in recs)
    assert recs[0]["request"] == "a red dress" and recs[0]["references"] == ["This red dress matches: it is a dress in red."]
    res = evaluate_explanations(recs, catalog(), load_checker(), bootstrap=50)["grounded"]
    assert res["hallucination_rate"]["mean"] == 0.0 and res["grounding_precision"]["mean"] == 1.0
    assert res["n"] == 3 and 0 < res["rouge1"]["mean"] <= 1 and res["feature_match_ratio"] > 0
