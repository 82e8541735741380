"""Generation (greedy, sampled, budget, batch) and the llava explainer with its grounded fallback."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from retrieval.catalog import Product
from synth_data.explain import EXPLAINERS, gather_evidence, get_explainer

from llava_tuning.adapters import load_model
from llava_tuning.generate import GenerationSettings, Generator, LlavaExplainer


def convs(n):
    asks = ["a red top", "something blue to wear on a long summer evening out", "green", "a black top please"]
    return [[{"from": "human", "value": f"<image>\nRequest: {asks[i % 4]}\nWhy does it fit?"}] for i in range(n)]


def images(n):
    cols = [(200, 30, 30), (30, 40, 200), (30, 160, 60), (10, 10, 10)]
    return [Image.new("RGB", (48, 72), cols[i % 4]) for i in range(n)]


@pytest.fixture(scope="module")
def tuned(trained_adapter):
    return load_model(trained_adapter)


def test_greedy_batch_equals_one_by_one_and_respects_the_budget(tuned):
    gen = Generator(tuned, GenerationSettings(max_new_tokens=12, batch_size=4, repetition_penalty=1.0))
    batch = gen.generate(convs(4), images(4))
    single = [gen.generate(convs(4)[i : i + 1], images(4)[i : i + 1])[0] for i in range(4)]
    assert batch == single  # left padding does not change what a prompt gets
    assert gen.generate(convs(4), images(4)) == batch  # greedy is deterministic
    assert len(gen.last_new_tokens) == 4 and all(1 <= n <= 12 for n in gen.last_new_tokens)
    short = Generator(tuned, GenerationSettings(max_new_tokens=2))
    short.generate(convs(3), images(3))
    assert all(1 <= n <= 2 for n in short.last_new_tokens)


def test_sampling_is_seeded(tuned):
    s = GenerationSettings(max_new_tokens=10, do_sample=True, temperature=1.5, top_p=1.0, seed=7)
    gen = Generator(tuned, s)
    a = gen.generate(convs(3), images(3))
    assert gen.generate(convs(3), images(3)) == a
    outs = {tuple(gen.generate(convs(3), images(3), GenerationSettings(**{**s.__dict__, "seed": k}))) for k in range(4)}
    assert len(outs) > 1


def test_generation_needs_one_image_per_conversation(tuned):
    gen = Generator(tuned)
    with pytest.raises(ValueError, match="image"):
        gen.generate([[{"from": "human", "value": "no image"}]], images(1))
    with pytest.raises(ValueError, match="2 conversations but 1 images"):
        gen.generate(convs(2), images(1))


def product(tmp_path, colour="Dark Blue", rgb=(20, 30, 120)):
    path = tmp_path / f"{colour}.jpg"
    Image.new("RGB", (48, 72), rgb).save(path)
    return Product(id=f"p-{colour}", title="Slim jeans", description="5-pocket jeans in washed denim.",
                   attributes={"colour": colour, "product_type": "Trousers", "garment_group": "Trousers Denim",
                               "index_group": "Menswear", "pattern": "Denim"},
                   category=["Menswear", "Trousers"], colour=colour, image_paths=[str(path)])


def test_explainer_falls_back_on_a_contradiction(tuned, tmp_path):
    """Whatever the model writes is checked: a text that contradicts the catalog is replaced by the
    grounded explainer's, and the reason is given."""
    ex = LlavaExplainer(bundle=tuned, settings=GenerationSettings(max_new_tokens=16))
    p = product(tmp_path)
    ev = gather_evidence("black jeans", p)
    bad = ex._checked("These are red jeans in black.", "black jeans", p, ev)
    assert bad.backend == "grounded" and bad.fallback_reason.startswith("grounding: colour")
    good = ex._checked("They are dark blue jeans.", "black jeans", p, ev)
    assert good.backend == "llava" and good.fallback_reason is None and "colour: dark blue" in good.facts_used
    empty = ex._checked("  ", "black jeans", p, ev)
    assert empty.fallback_reason == "empty output"
    # end to end: every rationale is either the model's checked text or a labelled fallback
    outs = ex.explain_batch([("black jeans", p, None), ("blue jeans", product(tmp_path, "Red", (200, 0, 0)), None)])
    assert len(outs) == 2 and ex.last_latency_s > 0
    for r in outs:
        assert r.text.strip()
        assert (r.backend == "llava" and r.fallback_reason is None) or (r.backend == "grounded" and r.fallback_reason)


def test_registered_as_llava_backend(tuned):
    assert "llava" in EXPLAINERS
    ex = get_explainer("llava", bundle=tuned)
    assert isinstance(ex, LlavaExplainer)
    with pytest.raises(FileNotFoundError, match="whyrec tune"):
        get_explainer("llava", model="/nonexistent/model")
