"""From a catalog to instruction data on disk: plan tasks, write answers, filter, split, report.

Every answer passes the grounding checker before it is kept (a comparison is checked clause by
clause against the item each clause names); rejects are counted by reason and a few are kept as
examples in the report. Output, per split (train / val by product group):

  {split}.llava.jsonl     {"id", "image", "item_id", "kind", "conversations": [human, gpt], ...}
  {split}.messages.jsonl  {"id", "item_id", "kind", "messages": [user, assistant], "images": [...]}
  rejected.jsonl, report.json, images/ (side-by-side pictures for comparisons)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from retrieval.artifacts import atomic_path, atomic_write_json
from retrieval.catalog import Catalog
from synth_data.config import SynthConfig
from synth_data.generators import Answer, Generator, get_generator
from synth_data.grounding import check, check_multi
from synth_data.prompts import IMAGE_TOKEN, human_turn
from synth_data.tasks import Candidates, Planner, Task

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_RE.split(text) if s.strip()]


def distinct_sentence_ratio(texts: Iterable[str]) -> float:
    """Distinct sentences / all sentences over a set of answers (1.0 = no sentence repeats)."""
    all_ = [s for t in texts for s in sentences(t)]
    return len(set(all_)) / len(all_) if all_ else 0.0


def judge_answer(task: Task, text: str) -> tuple[bool, list[str], dict]:
    """Whether an answer may be kept, why not, and the checker's findings."""
    if not text or not text.strip():
        return False, ["empty answer"], {}
    if IMAGE_TOKEN in text:
        return False, ["image token in the answer"], {}
    if task.kind == "comparison":
        labels = {"A": task.items[0], "B": task.items[1]}
        results = check_multi(text, labels, request=task.words)
        reasons = [f"Item {label}: {r}" for label, res in results.items() for r in res.reasons()]
        return not reasons, reasons, {label: res.to_dict() for label, res in results.items()}
    res = check(text, task.item, request=task.words)
    reasons = res.reasons()
    if task.kind in ("rationale", "description"):  # what is served: as strict as `explain.vet`
        reasons += [f"unverified: {t.kind} {t.value!r} ({t.phrase!r}) is not in the catalog's facts" for t in res.not_stated]
    return not reasons, reasons, res.to_dict()


def _reason_key(reason: str) -> str:
    """'Item A: colour: says ...' -> 'contradicted colour'; 'malformed: ...' -> 'malformed'."""
    if reason.startswith(("malformed", "request failed", "empty answer", "image token", "unverified")):
        return reason.split(":")[0]
    body = reason.split(": ", 1)[1] if reason.startswith("Item ") else reason
    return "contradicted " + body.split(":")[0]


def pair_image(paths: list[str], out_dir: Path, height: int = 384) -> str:
    """Two photos side by side (A left, B right) as one JPEG, made once per pair."""
    from PIL import Image

    key = hashlib.sha1("\x1f".join(paths).encode()).hexdigest()[:16]
    target = out_dir / f"pair_{key}.jpg"
    if not target.exists():
        ims = []
        for p in paths:
            with Image.open(p) as im:
                im = im.convert("RGB")
                ims.append(im.resize((max(1, round(im.width * height / im.height)), height)))
        canvas = Image.new("RGB", (sum(i.width for i in ims) + 16 * (len(ims) - 1), height), "white")
        x = 0
        for im in ims:
            canvas.paste(im, (x, 0))
            x += im.width + 16
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp.jpg")
        canvas.save(tmp, quality=90)
        tmp.replace(target)
    return str(target.resolve())


def make_records(task: Task, answer: str, index: int, image: str | None) -> tuple[dict, dict]:
    """The example in LLaVA conversation form and in messages + images form."""
    human = human_turn(task, image=image is not None)
    digest = hashlib.sha1(f"{task.kind}\x1f{[p.id for p in task.items]}\x1f{task.words}\x1f{answer}".encode()).hexdigest()[:10]
    rid = f"{task.kind}-{index:06d}-{digest}"
    meta = {"split": task.split, "group_id": task.item.group_id or task.item.id, "item_ids": [p.id for p in task.items],
            "request": task.request, "question": task.question, "qtype": task.qtype, "hard_negative": task.hard_negative,
            "withhold": list(task.withhold),
            **{k: v for k, v in task.meta.items() if isinstance(v, (str, int, float, bool, list))}}
    llava = {"id": rid, "item_id": task.item.id, "kind": task.kind}
    if image:
        llava["image"] = image
    llava["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]
    llava["meta"] = meta
    text = human[len(IMAGE_TOKEN) + 1:] if human.startswith(IMAGE_TOKEN + "\n") else human
    user = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
    messages = {"id": rid, "item_id": task.item.id, "kind": task.kind,
                "messages": [{"role": "user", "content": user},
                             {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
                "images": [image] if image else [], "meta": meta}
    return llava, messages


@dataclass
class SynthReport:
    backend: str
    requested: int
    accepted: int = 0
    attempted: int = 0
    rejected: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    reject_examples: list[dict] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    question_types: dict[str, int] = field(default_factory=dict)
    hard_negatives: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    distinct_sentence_ratio: float = 0.0
    distinct_answer_ratio: float = 0.0
    elapsed_s: float = 0.0
    examples_per_minute: float = 0.0
    generator: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def reject_rate(self) -> float:
        return self.rejected / self.attempted if self.attempted else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "reject_rate": round(self.reject_rate, 4)}


def generate(catalog: Catalog, config: SynthConfig, generator: Generator | None = None,
             candidates: Candidates | None = None, progress: bool = True) -> SynthReport:
    """Write `config.n` accepted examples (or as many as `max_attempts_factor` allows) to `config.out`."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    planner = Planner(catalog, seed=config.seed, kinds=config.kinds, question_types=config.question_types,
                      hard_negative_fraction=config.hard_negative_fraction, val_fraction=config.val_fraction,
                      candidates=candidates, candidates_k=config.candidates_k, require_image=config.require_image,
                      heldout_fraction=config.heldout_fraction, thin_fraction=config.thin_fraction)
    generator = generator or get_generator(config.backend, seed=config.seed, config=config.openai)
    report = SynthReport(backend=generator.name, requested=config.n)
    kinds: Counter = Counter()
    qtypes: Counter = Counter()
    reasons: Counter = Counter()
    splits: Counter = Counter()
    answers: list[str] = []
    max_attempts = int(config.n * config.max_attempts_factor) + 10
    files = {f"{s}.{form}": out / f"{s}.{form}.jsonl" for s in SPLITS for form in ("llava", "messages")}
    with contextlib.ExitStack() as stack:  # each file published whole (atomically) when the run ends
        handles = {name: stack.enter_context(stack.enter_context(atomic_path(path)).open("w")) for name, path in files.items()}
        rejected_f = stack.enter_context(stack.enter_context(atomic_path(out / "rejected.jsonl")).open("w"))
        with tqdm(total=config.n, desc=f"synth ({generator.name})", unit="ex", disable=not progress) as bar:
            while report.accepted < config.n and report.attempted < max_attempts:
                size = min(config.batch_size, config.n - report.accepted, max_attempts - report.attempted)
                tasks = [planner.task() for _ in range(size)]
                results: list[Answer] = generator.answer_many(tasks)
                for task, ans in zip(tasks, results):
                    index = report.attempted
                    report.attempted += 1
                    if ans.text is None:
                        ok, why, findings = False, [ans.error or "no answer"], {}
                    else:
                        ok, why, findings = judge_answer(task, ans.text)
                    if not ok:
                        report.rejected += 1
                        reasons.update({_reason_key(r) for r in why})
                        row = {"kind": task.kind, "item_ids": [p.id for p in task.items], "request": task.words,
                               "answer": ans.text, "reasons": why}
                        rejected_f.write(json.dumps(row, ensure_ascii=False) + "\n")
                        if len(report.reject_examples) < config.reject_examples:
                            report.reject_examples.append(row)
                        continue
                    image = None
                    if task.images:
                        image = task.images[0] if len(task.images) == 1 else (
                            pair_image(task.images, out / "images") if config.pair_images else None)
                    llava, messages = make_records(task, ans.text, index, image)
                    handles[f"{task.split}.llava"].write(json.dumps(llava, ensure_ascii=False) + "\n")
                    handles[f"{task.split}.messages"].write(json.dumps(messages, ensure_ascii=False) + "\n")
                    report.accepted += 1
                    kinds[task.kind] += 1
                    splits[task.split] += 1
                    report.hard_negatives += task.hard_negative
                    if task.qtype:
                        qtypes[task.qtype] += 1
                    answers.append(ans.text)
                    bar.update(1)
                bar.set_postfix(rejected=report.rejected)
    report.elapsed_s = round(time.perf_counter() - t0, 3)
    report.examples_per_minute = round(report.accepted / report.elapsed_s * 60, 1) if report.elapsed_s else 0.0
    report.kinds, report.question_types = dict(kinds), dict(qtypes)
    report.reject_reasons, report.splits = dict(reasons.most_common()), dict(splits)
    report.distinct_sentence_ratio = round(distinct_sentence_ratio(answers), 4)
    report.distinct_answer_ratio = round(len(set(answers)) / len(answers), 4) if answers else 0.0
    report.generator = generator.stats()
    report.files = {name: str(path) for name, path in files.items()}
    atomic_write_json(out / "report.json", report.to_dict(), indent=2)
    if report.accepted < config.n:
        log.warning("only %d of %d examples after %d attempts (%d rejected)", report.accepted, config.n,
                    report.attempted, report.rejected)
    return report
