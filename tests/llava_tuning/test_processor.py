"""Chat formatting and the loss mask: only the assistant's tokens are targets."""
from __future__ import annotations

import json

import pytest
import torch

from llava_tuning.data import ConversationDataset, Collator, masked_loss, read_records
from llava_tuning.presets import create_model, tiny_tokenizer
from llava_tuning.processor import IGNORE_INDEX, ChatProcessor
from llava_tuning.vision import EfficientNetImageProcessor

N_IMG = 4


@pytest.fixture(scope="module")
def processor():
    return ChatProcessor(tiny_tokenizer(), EfficientNetImageProcessor(64), N_IMG, "chatml", system_prompt="Be brief.")


def targets(proc, enc) -> str:
    return proc.tokenizer.decode([i for i, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX])


def test_only_assistant_tokens_are_targets(processor):
    conv = [{"from": "human", "value": "<image>\nIs it red?"}, {"from": "gpt", "value": "Yes, it is red."},
            {"from": "human", "value": "And the fit?"}, {"from": "gpt", "value": "It is slim."}]
    enc = processor.encode(conv)
    assert len(enc.input_ids) == len(enc.labels)
    # labels are the input ids themselves where set (the model shifts them), -100 elsewhere
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(enc.input_ids, enc.labels))
    assert targets(processor, enc) == "Yes, it is red.<|im_end|>It is slim.<|im_end|>"
    # the image is expanded to the tower's patch count, and never a target
    img = [k for k, i in enumerate(enc.input_ids) if i == processor.image_token_id]
    assert len(img) == N_IMG and img == list(range(img[0], img[0] + N_IMG))
    assert all(enc.labels[k] == IGNORE_INDEX for k in img)
    # everything up to the first answer (system, human turn, assistant header) is masked
    full = processor.tokenizer.decode(enc.input_ids)
    first = next(k for k, lab in enumerate(enc.labels) if lab != IGNORE_INDEX)
    prefix = processor.tokenizer.decode(enc.input_ids[:first])
    assert prefix.startswith("<|im_start|>system\nBe brief.<|im_end|>") and prefix.endswith("<|im_start|>assistant\n")
    assert "And the fit?" in full and "And the fit?" not in targets(processor, enc)


def test_generation_prompt_drops_the_answer(processor):
    conv = [{"from": "human", "value": "<image>\nIs it red?"}, {"from": "gpt", "value": "Yes."}]
    enc = processor.encode(conv, add_generation_prompt=True)
    text = processor.tokenizer.decode(enc.input_ids)
    assert text.endswith("<|im_start|>assistant\n") and "Yes." not in text
    assert enc.n_labels == 0


def test_bad_conversations_are_refused(processor):
    with pytest.raises(ValueError, match="role"):
        processor.encode([{"from": "bot", "value": "x"}])
    with pytest.raises(ValueError, match="image"):
        processor.encode([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "<image>"}])


def test_read_records_names_the_bad_line(tmp_path, records):
    good = json.dumps(records[0])
    bad = dict(records[1], conversations=[{"from": "human", "value": "no image here"}, {"from": "gpt", "value": "x"}])
    path = tmp_path / "d.jsonl"
    path.write_text(good + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"d.jsonl:2: expected exactly one <image>"):
        read_records(path)
    path.write_text(good + "\n{not json\n")
    with pytest.raises(ValueError, match=r"d.jsonl:2: not JSON"):
        read_records(path)
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "missing.jsonl")
    path.write_text(good + "\n")
    assert [r["id"] for r in read_records(path, kinds=["description"])] == [records[0]["id"]]


def test_masked_loss_is_cross_entropy_over_answer_tokens_only(records):
    """The loss the trainer uses (logits only where the next token is a target) equals plain
    cross-entropy of the full logits restricted to assistant tokens; padding and prompts add nothing."""
    bundle = create_model("tiny-random")
    ds = ConversationDataset(records[:3], bundle.processor, 256)
    batch = Collator(bundle.processor)([ds[i] for i in range(3)])
    loss_sum, n = masked_loss(bundle.model, batch)
    with torch.no_grad():
        logits = bundle.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              pixel_values=batch["pixel_values"]).logits
    labels = batch["labels"]
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    keep = shift_labels != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(shift_logits[keep], shift_labels[keep], reduction="sum")
    assert n == int(keep.sum()) == sum(e.n_labels for e in ds.encoded) > 0
    assert torch.allclose(loss_sum, manual, atol=1e-4)
    # image positions never carry a label
    answer_ids = set(batch["input_ids"][labels != IGNORE_INDEX].tolist())
    assert bundle.processor.image_token_id not in answer_ids


def test_truncation_keeps_image_and_drops_empty_examples(records, processor):
    ds = ConversationDataset(records[:2], processor, max_length=200)
    assert len(ds) == 2
    with pytest.raises(ValueError, match="image tokens"):
        ConversationDataset(records[:1], processor, max_length=8)
