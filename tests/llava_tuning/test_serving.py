"""Serving the llava explainer: one batched generate call per response, cached item text composed
with the request-aware sentences, a live budget whose overflow falls back saying why; and the
offline item-text job (`whyrec index describe`): batched, checked, resumable."""
from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

from retrieval.catalog import Catalog, Product
from synth_data.explain import Evidence, vet
from synth_data.grounding import check

from llava_tuning.generate import GenerationSettings, LlavaExplainer
from llava_tuning.presets import create_model

COLOURS = {"Black": (10, 10, 10), "Red": (200, 30, 30), "White": (240, 240, 240), "Blue": (30, 40, 200)}


@pytest.fixture(scope="module")
def bundle():
    return create_model("tiny-random")


def products(folder, n=8) -> list[Product]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        colour = list(COLOURS)[i % 4]
        path = folder / f"{i}.jpg"
        Image.new("RGB", (48, 72), COLOURS[colour]).save(path)
        out.append(Product(id=f"i{i}", title=f"{colour} dress {i}", description="A dress in soft jersey.",
                           attributes={"colour": colour, "product_type": "Dress", "index_group": "Ladieswear"},
                           category=["Ladieswear", "Dress"], colour=colour, image_paths=[str(path)]))
    return out


class CountingGenerate:
    """Wraps the real `Generator.generate`, recording how many conversations each call got."""

    def __init__(self, generator):
        self.real = generator.generate
        self.calls: list[int] = []
        generator.generate = self

    def __call__(self, conversations, images, settings=None, banned=None):
        self.calls.append(len(conversations))
        return self.real(conversations, images, settings, banned)


def test_one_batched_call_per_response_cache_composed_budget_overflow_says_why(bundle, tmp_path):
    items = products(tmp_path / "img")
    cache = tmp_path / "item_text.jsonl"
    cache.write_text("".join(json.dumps({"id": p.id, "text": "Shown here on its own.", "model": "m", "checked": True}) + "\n"
                             for p in items[:3])
                     + json.dumps({"id": items[3].id, "text": "It is bright red.", "model": "m", "checked": False}) + "\n")
    ex = LlavaExplainer(bundle=bundle, settings=GenerationSettings(max_new_tokens=6), item_text=cache, live_items=3)
    spy = CountingGenerate(ex.generator)
    got = list(ex.explain_iter([("a black dress", p, None) for p in items]))
    assert spy.calls == [3]  # one generate call, for the live budget's three uncached items
    assert sorted(i for i, _ in got) == list(range(8))
    by = dict(got)
    for i in range(3):  # cached: composed at once, the request-aware part first, then the cached text
        r = by[i]
        assert r.backend == "llava" and r.fallback_reason is None and r.text.endswith("Shown here on its own.")
        assert "black" in r.text.lower() or "you asked" in r.text.lower()
        assert not check(r.text, items[i], request="a black dress").contradicted
    assert [i for i, _ in got][:3] == [0, 1, 2]  # composed ones come first, before the live batch
    live_positions = [i for i, _ in got[-3:]]
    assert live_positions == [3, 4, 5]  # an unchecked cache line is not used: item 3 is generated live
    for i in (6, 7):
        assert by[i].backend == "grounded" and "no cached item text" in by[i].fallback_reason and "live budget" in by[i].fallback_reason
    over = LlavaExplainer(bundle=bundle, settings=GenerationSettings(max_new_tokens=6), item_text=cache, live_items=0)
    refused = over.explain("a black dress", items[3])  # its offline text was refused: the reason says so
    assert refused.backend == "grounded" and "failed the check" in refused.fallback_reason
    for i in live_positions:
        assert by[i].backend == "llava" or by[i].fallback_reason  # the model's checked text, or a fallback that says why
    none = LlavaExplainer(bundle=bundle, settings=GenerationSettings(max_new_tokens=6), live_items=0)
    spy0 = CountingGenerate(none.generator)
    outs = none.explain_batch([("a black dress", p, None) for p in items[:2]])
    assert spy0.calls == [] and all(o.fallback_reason for o in outs)


def test_describe_job_is_batched_checked_and_resumable(tmp_path):
    from llava_tuning import describe

    items = products(tmp_path / "img", 6)
    Catalog(items).save(tmp_path / "catalog")
    config = tmp_path / "whyrec.yaml"
    config.write_text(yaml.safe_dump({"catalog": {"dir": str(tmp_path / "catalog")}, "index": {"dir": str(tmp_path / "index")}}))
    first = describe.describe_catalog(config, model="tiny-random", batch_size=4, limit=4, attempts=1,
                                      settings=GenerationSettings(max_new_tokens=8))
    path = tmp_path / "index" / "item_text.jsonl"
    assert first["file"] == str(path) and first["written"] == 4 and first["checked"] + first["failed"] == 4
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["i0", "i1", "i2", "i3"]
    for x in lines:  # "checked" is the grounding checker's verdict on exactly the stored text
        p = next(p for p in items if p.id == x["id"])
        assert x["checked"] == (vet(x["text"], "", p, Evidence(request=""))[1] is None)
        assert x["checked"] or x["reason"]
    again = describe.describe_catalog(config, model="tiny-random", batch_size=4, attempts=1, settings=GenerationSettings(max_new_tokens=8))
    assert again["skipped_done"] == 4 and again["written"] == 2 and again["in_file"] == 6  # resumed: only the rest
    done = describe.describe_catalog(config, model="tiny-random", batch_size=4, attempts=1)
    assert done["written"] == 0 and len(path.read_text().splitlines()) == 6
    refused = {x["id"] for x in map(json.loads, path.read_text().splitlines()) if not x["checked"]}
    more = describe.describe_catalog(config, model="tiny-random", batch_size=4, attempts=2, min_facts=0,
                                     settings=GenerationSettings(max_new_tokens=8))
    assert more["written"] == len(refused) and more["retried"] == len(refused)  # a second try for the refused ones only
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 6  # compacted: one line per item, the retry's
    assert all(x["attempts"] == 2 for x in lines if x["id"] in refused)
    with pytest.raises(ValueError, match="unknown item"):
        describe.describe_catalog(config, model="tiny-random", ids=["nope"])


class ScriptedWords:
    """The real `Generator.generate` (so turns, images and constraints go through it), whose answers for
    the items in `script` are replaced, attempt by attempt, by given words: tiny-random never writes
    catalog words, and what is tested here is what the job keeps of a model's words."""

    def __init__(self, generator, script: dict[str, list[str]]):
        self.real = generator.generate
        self.script = {k: list(v) for k, v in script.items()}
        self.turns: dict[str, list[str]] = {}
        generator.generate = self

    def __call__(self, conversations, images, settings=None, banned=None):
        texts = self.real(conversations, images, settings, banned)
        out = []
        for conv, text in zip(conversations, texts):
            item = next(i for i in self.script if f"title: {i}\n" in conv[0]["value"])
            self.turns.setdefault(item, []).append(conv[0]["value"])
            out.append(self.script[item].pop(0) if self.script[item] else text)
        return out


def test_describe_retries_a_refused_item_with_other_turns_and_keeps_only_catalog_backed_text(bundle, tmp_path):
    from llava_tuning import describe
    from synth_data.details import stated_facts
    from synth_data.grounding import catalog_backed_sentences

    items = products(tmp_path / "img", 2)
    for p in items:
        p.description = "Dress in soft jersey with a round neck, short sleeves and a tie belt."
    black, red = items[0], items[1]  # "Black dress 0", "Red dress 1"
    ex = LlavaExplainer(bundle=bundle, settings=GenerationSettings(max_new_tokens=8))
    spy = ScriptedWords(ex.generator, {
        black.title: ["Blah blah zorp.",  # attempt 1: nothing backed by the catalog -> refused
                      "The description mentions a round neck. It is a red dress with gold buttons.",  # one fact, one false sentence
                      "From the description: dress in soft jersey. The description mentions a round neck."],  # a second fact, a repeat
        red.title: ["Zorp.", "Blah.", "Nothing here."]})
    out = tmp_path / "item_text.jsonl"
    counts = describe.describe_items(ex, items, out, "m", batch_size=2, progress=False, attempts=3, min_facts=2)
    recs = {x["id"]: x for x in map(json.loads, out.read_text().splitlines())}
    assert counts["written"] == 2 and counts["retried"] == 4  # both refused at first: two more turns each
    got = recs[black.id]
    assert got["checked"] and got["attempts"] == 3
    assert "round neck" in got["text"] and "soft jersey" in got["text"] and got["text"].count("round neck") == 1
    assert "red" not in got["text"].lower() and "gold" not in got["text"].lower()  # the unbacked sentence is cut
    assert catalog_backed_sentences(got["text"], black) == got["text"] and vet(got["text"], "", black, Evidence(request=""))[1] is None
    assert stated_facts(got["text"], black) >= 2
    turns = spy.turns[black.title]  # three different turns the adapter was tuned on, in order
    assert len(set(turns)) == 3 and '"dress"' in turns[0] and '"black dress"' in turns[1] and "Shopper question:" in turns[2]
    assert not recs[red.id]["checked"] and recs[red.id]["attempts"] == 3 and recs[red.id]["reason"]
    assert describe.done_ids(out, 3, 2, Catalog(items)) == {black.id, red.id}  # nothing left to retry at 3 attempts
    assert describe.done_ids(out, 4, 2, Catalog(items)) == {black.id}  # a fourth attempt would retry only the refused one
