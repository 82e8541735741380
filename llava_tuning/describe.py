"""The offline item-text cache: what the model says about each item without a request (what the
picture shows, its selling points), written once per index so serving mostly composes.

`whyrec index describe --config X` reads the config's catalog and index dir and appends to
`<index dir>/item_text.jsonl` one line per item: {"id", "text", "model", "checked", "attempts"}. Each
text is generated under the item's facts (`FactConstraint`), cut to the sentences whose every content
word is the item's own catalog word (`grounding.catalog_backed_sentences`), and then judged by the
grounding checker (synth_data.explain.vet, with no request). An item whose text is refused (nothing
left) or thin (fewer than `min_facts` description facts) is tried again with another tuned turn
(`attempt_plan`), up to `attempts`, its kept sentences added up; an item still without text is written
with "checked": false and its reason, and serving never uses it. The job is batched, shows a tqdm bar,
and resumes: ids already finished in the file (or in a shard of an interrupted multi-process run) are
skipped, a refused or thin one is tried on from its attempt count; the file is compacted to the last
line per id at the end. Under `accelerate
launch` each process describes its share into `item_text.jsonl.rank<N>`, and the main process merges
the shards into the file.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

ITEM_TEXT_FILE = "item_text.jsonl"


def describe_request(product) -> str:
    """The request the offline text answers first: the item's own type. The tuned model's rationale turn
    (catalog data + photo) is the one that cites description details; the photo-only describe turn
    of the teacher data invents them at this model size (see data/demo/llava/README.md)."""
    return (product.attributes.get("product_type") or product.title).lower()


def item_text_path(config: str | Path | dict) -> Path:
    """The item-text cache of a whyrec config: `serve.explainer_options.item_text` when set (the demo
    ships its file), else `<index dir>/item_text.jsonl`."""
    from retrieval.config import load_yaml

    cfg = load_yaml(config) if not isinstance(config, dict) else config
    shipped = ((cfg.get("serve") or {}).get("explainer_options") or {}).get("item_text")
    if shipped:
        return Path(shipped)
    index_dir = (cfg.get("index") or {}).get("dir")
    if not index_dir:
        raise ValueError("the config has no index.dir: the item-text cache lives beside the index")
    return Path(index_dir) / ITEM_TEXT_FILE


def describe_turns(product) -> list[str]:
    """The human turns an item is described with, tried in order: the rationale turn for its own type,
    then for its colour and type, then a product question its description answers (the tuned
    'detail' question turn, whose answers quote the description). All are turns the adapter was tuned on."""
    from synth_data.details import DETAIL_QUESTIONS, detail_answer
    from synth_data.prompts import human_turn, rationale_prompt
    from synth_data.tasks import Task

    own = describe_request(product)
    colour = (product.colour or product.attributes.get("colour") or "").lower()
    turns = [rationale_prompt(own, product), rationale_prompt(f"{colour} {own}".strip(), product)]
    asked = next(((qs[0], cues) for qs, cues, _ in DETAIL_QUESTIONS if detail_answer(product, cues)), None)
    question = asked[0] if asked else "What can you tell me about this?"
    turns.append(human_turn(Task("question", [product], question=question, qtype="detail",
                                 meta={"cues": list(asked[1]) if asked else []}), image=True))
    return turns


def attempt_plan(product, attempt: int) -> tuple[str, int | None]:
    """Attempt `attempt` (0-based) of an item: (human turn, sampling seed or None for greedy). The
    first len(describe_turns) attempts are greedy over the turns; later ones sample them again, seeded."""
    turns = describe_turns(product)
    return turns[attempt % len(turns)], (None if attempt < len(turns) else attempt)


def keep_item_text(words: str, product, kept: str = "") -> tuple[str, str | None]:
    """What of a model's words about an item may be served without a request, added to `kept`: the
    whole sentences whose every content word is the item's own catalog word (a repeat adds nothing),
    judged as a whole by the grounding checker. Returns (text, None), or (`kept`, why nothing was added).
    The offline job and live serving keep item text by this one rule."""
    from synth_data.explain import Evidence, vet
    from synth_data.grounding import catalog_backed_sentences

    new = catalog_backed_sentences(f"{kept} {whole_sentences(' '.join(words.split()))}", product)
    if not new or new == kept:
        return kept, "no sentence backed word by word by the catalog"
    _, reason = vet(new, "", product, Evidence(request=""))
    return (new, None) if reason is None else (kept, reason)


def _records(path: Path) -> dict[str, dict]:
    """The last line per id in the file and its shards (a retried item has a later line)."""
    out: dict[str, dict] = {}
    for p in [path, *sorted(path.parent.glob(path.name + ".rank*"))]:
        if p.exists():
            with p.open() as f:
                for line in f:
                    if line.strip():
                        try:
                            rec = json.loads(line)
                            out[str(rec["id"])] = rec
                        except (ValueError, KeyError):
                            log.warning("skipping a broken line in %s (an interrupted write)", p)
    return out


def finished(rec: dict, attempts: int, min_facts: int, product) -> bool:
    """Whether an item's record needs no more attempts: its text states `min_facts` description facts,
    or it has had `attempts` (a line without "attempts" was written by the one-attempt job)."""
    from synth_data.details import stated_facts

    if rec.get("checked") and rec.get("text") and stated_facts(rec["text"], product) >= min_facts:
        return True
    return int(rec.get("attempts", 1)) >= attempts


def done_ids(path: Path, attempts: int = 1, min_facts: int = 0, catalog=None) -> set[str]:
    """Ids in the file and its shards that need no more attempts (see `finished`; without a catalog,
    every id in the file)."""
    recs = _records(path)
    if catalog is None:
        return set(recs)
    return {i for i, r in recs.items() if i not in catalog or finished(r, attempts, min_facts, catalog[i])}


def describe_items(explainer, products: Iterable, out: Path, model_name: str, batch_size: int = 8,
                   progress: bool = True, attempts: int = 3, min_facts: int = 2,
                   previous: dict[str, dict] | None = None) -> dict[str, int]:
    """Describe `products` in batches, appending one checked line per item to `out`; returns counts.

    An item is tried with up to `attempts` turns (`attempt_plan`) until its text states `min_facts`
    description facts: each attempt's catalog-backed sentences are added to those kept before (a
    sentence that adds no new word is dropped), and the whole is judged by the grounding checker; an
    attempt whose addition fails the check is not kept. `previous`: earlier lines by id (a resumed
    run goes on from their text and attempt count)."""
    from tqdm import tqdm

    from llava_tuning.generate import _image_for
    from synth_data.details import stated_facts

    if attempts < 1 or min_facts < 0:
        raise ValueError("attempts must be >= 1 and min_facts >= 0")
    previous = previous or {}
    products = list(products)
    counts = {"written": 0, "checked": 0, "failed": 0, "generated": 0, "retried": 0}
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = explainer.generator.settings
    with out.open("a") as f, tqdm(total=len(products), desc="describe items", unit="item", disable=not progress) as bar:
        for start in range(0, len(products), batch_size):
            chunk = products[start : start + batch_size]
            state = {}
            for p in chunk:  # a line without "attempts" was written by the one-attempt job
                prev = previous.get(p.id) or {}
                state[p.id] = {"text": prev.get("text") or "" if prev.get("checked") else "",
                               "attempts": int(prev.get("attempts", 1)) if prev else 0, "reason": prev.get("reason")}
            images = {p.id: _image_for(p, explainer.image_root) for p in chunk}
            while True:
                todo = [p for p in chunk if state[p.id]["attempts"] < attempts
                        and not (state[p.id]["text"] and stated_facts(state[p.id]["text"], p) >= min_facts)]
                if not todo:
                    break
                by_seed: dict[int | None, list] = {}
                for p in todo:
                    by_seed.setdefault(attempt_plan(p, state[p.id]["attempts"])[1], []).append(p)
                for seed, group in by_seed.items():
                    turns = [attempt_plan(p, state[p.id]["attempts"])[0] for p in group]
                    s = dataclasses.replace(settings, do_sample=seed is not None, seed=seed)
                    texts = explainer.generator.generate([[{"from": "human", "value": t}] for t in turns],
                                                         [images[p.id] for p in group], s,
                                                         banned=[explainer.item_banned(p) for p in group])
                    counts["generated"] += len(group)
                    counts["retried"] += sum(1 for p in group if state[p.id]["attempts"] > 0)
                    for p, text in zip(group, texts):
                        st = state[p.id]
                        st["attempts"] += 1
                        st["text"], reason = keep_item_text(text, p, st["text"])
                        if not st["text"]:
                            st["reason"] = reason
            for p in chunk:
                st = state[p.id]
                ok = bool(st["text"])
                rec: dict[str, Any] = {"id": p.id, "text": st["text"], "model": model_name, "checked": ok,
                                       "attempts": st["attempts"]}
                if not ok:
                    rec["reason"] = st["reason"] or "no sentence backed word by word by the catalog"
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                counts["written"] += 1
                counts["checked" if ok else "failed"] += 1
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(chunk))
    return counts


def whole_sentences(text: str) -> str:
    """The text up to its last full sentence (an answer cut by the token budget ends mid-sentence)."""
    import re

    ends = list(re.finditer(r"[.!?](?=\s|$)", text))
    return text[: ends[-1].end()] if ends else text


def merge_shards(path: Path) -> int:
    """Fold `path.rank*` shards into `path` (atomically), keeping the last line per id (a retried item's
    newer line wins), so the file holds one line per item."""
    from retrieval.artifacts import atomic_write_text

    recs = _records(path)
    shards = sorted(path.parent.glob(path.name + ".rank*"))
    if shards or path.exists():
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs.values()))
    for p in shards:
        p.unlink()
    return len(recs)


def describe_catalog(config: str | Path, model: str | None = None, batch_size: int = 8, limit: int | None = None,
                     ids: list[str] | None = None, threads: int | None = None, out: str | Path | None = None,
                     attempts: int = 3, min_facts: int = 2, **model_overrides: Any) -> dict[str, Any]:
    """The job behind `whyrec index describe`: every catalog item (or `ids`, or the first `limit`)
    not yet finished in the cache (see `finished`: a refused or thin text is retried up to `attempts`).
    `model`: an adapter / merged dir / preset (default: the config's serve.explainer_options.model);
    `out`: another file than <index dir>/item_text.jsonl (an index one may not write to)."""
    from retrieval.catalog import Catalog
    from retrieval.config import load_yaml
    from llava_tuning.generate import LlavaExplainer

    cfg = load_yaml(config)
    out = Path(out) if out else item_text_path(cfg)
    model = model or ((cfg.get("serve") or {}).get("explainer_options") or {}).get("model")
    if not model:
        raise ValueError("no model: pass --model, or set serve.explainer_options.model in the config")
    catalog = Catalog.load((cfg.get("catalog") or {})["dir"])
    wanted = ids if ids is not None else list(catalog.ids)
    unknown = [i for i in wanted if i not in catalog]
    if unknown:
        raise ValueError(f"unknown item id(s): {unknown[:5]}")
    if limit is not None:
        wanted = wanted[:limit]
    rank, world = 0, 1
    accelerator = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under `accelerate launch`: one share per process
        from accelerate import Accelerator

        accelerator = Accelerator()
        rank, world = accelerator.process_index, accelerator.num_processes
    previous = _records(out)
    done = done_ids(out, attempts, min_facts, catalog)
    todo = [catalog[i] for i in wanted if i not in done][rank::world]
    t0 = time.time()
    counts = {"written": 0, "checked": 0, "failed": 0, "generated": 0, "retried": 0}
    if todo:
        explainer = LlavaExplainer(model=model, threads=threads, **model_overrides)
        if accelerator is not None:
            explainer.generator.model.to(accelerator.device)
        target = out if world == 1 else out.with_name(f"{out.name}.rank{rank}")
        counts = describe_items(explainer, todo, target, str(model), batch_size, progress=rank == 0,
                                attempts=attempts, min_facts=min_facts, previous=previous)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    total = merge_shards(out) if rank == 0 else 0
    return {"file": str(out), "model": str(model), "skipped_done": len(done & set(wanted)), **counts, "in_file": total,
            "seconds": round(time.time() - t0, 1), "items_per_s": round(counts["written"] / max(1e-9, time.time() - t0), 3),
            "processes": world}
