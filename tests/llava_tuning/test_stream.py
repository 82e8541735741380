"""Streaming generation for the chat: the model's words go out as generated, clause by clause,
each clause only after the text so far passes the grounding check."""
from __future__ import annotations

import threading

import pytest

from synth_data.explain import gather_evidence

from llava_tuning.adapters import load_model
from llava_tuning.generate import GenerationSettings, Generator, LlavaExplainer, checked_stream
from tests.llava_tuning.test_generate import convs, images, product


@pytest.fixture(scope="module")
def tuned(trained_adapter):
    return load_model(trained_adapter)


def drain(gen):
    """The pieces a generator yields, and what it returns."""
    pieces = []
    try:
        while True:
            pieces.append(next(gen))
    except StopIteration as stop:
        return pieces, stop.value


def test_checked_stream_passes_true_clauses_and_stops_at_a_false_one(tmp_path):
    p = product(tmp_path)  # dark blue men's jeans
    stop = threading.Event()
    words = iter(["They are ", "dark blue ", "jeans", ", from the ", "men's range. ", "They are ", "red", ", sadly.", " More"])
    pieces, (said, reasons) = drain(checked_stream(words, p, "blue jeans", [], stop))
    assert "".join(pieces) == said == "They are dark blue jeans, from the men's range."
    assert stop.is_set() and reasons and reasons[0].startswith("colour")
    assert next(words) == " More"  # the model's later words were never read


def test_stream_gives_the_greedy_answer_piece_by_piece(tuned):
    gen = Generator(tuned, GenerationSettings(max_new_tokens=12, repetition_penalty=1.0))
    whole = gen.generate(convs(1), images(1))[0]
    pieces = list(gen.stream(convs(1)[0], images(1)[0]))
    assert "".join(pieces).strip() == whole


def test_explain_stream_returns_a_checked_rationale(tuned, tmp_path):
    ex = LlavaExplainer(bundle=tuned, settings=GenerationSettings(max_new_tokens=16))
    p = product(tmp_path)
    ev = gather_evidence("black jeans", p)
    pieces, r = drain(ex.explain_stream("black jeans", p, ev))
    assert "".join(pieces).strip() == r.text.strip() and r.text.strip()
    assert (r.backend == "llava" and not r.fallback_reason) or r.fallback_reason  # the model's checked words, or a labelled fallback
