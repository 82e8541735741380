"""The offline item-text cache: what the model says about each item without a request (what the
picture shows, its selling points), written once per index so serving mostly composes.

`whyrec index describe --config X` reads the config's catalog and index dir and appends to
`<index dir>/item_text.jsonl` one line per item: {"id", "text", "model", "checked"}. Each text is
generated under the item's facts (`FactConstraint`), cut to the sentences whose every content word is
the item's own catalog word (`grounding.catalog_backed_sentences`), and then judged by the grounding
checker (synth_data.explain.vet, with no request): a text that fails is written with "checked": false and
its reason, and serving never uses it. The job is batched, shows a tqdm bar, and resumes: ids already
in the file (or in a shard of an interrupted multi-process run) are skipped. Under `accelerate
launch` each process describes its share into `item_text.jsonl.rank<N>`, and the main process merges
the shards into the file.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

ITEM_TEXT_FILE = "item_text.jsonl"


def describe_request(product) -> str:
    """The request the offline text answers: the item's own type. The tuned model's rationale turn
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


def done_ids(path: Path) -> set[str]:
    """Ids already described in the file and its shards (checked or not: a failure is not retried)."""
    out: set[str] = set()
    for p in [path, *sorted(path.parent.glob(path.name + ".rank*"))]:
        if p.exists():
            with p.open() as f:
                for line in f:
                    if line.strip():
                        try:
                            out.add(str(json.loads(line)["id"]))
                        except (ValueError, KeyError):
                            log.warning("skipping a broken line in %s (an interrupted write)", p)
    return out


def describe_items(explainer, products: Iterable, out: Path, model_name: str, batch_size: int = 8,
                   progress: bool = True) -> dict[str, int]:
    """Describe `products` in batches, appending checked lines to `out`; returns counts."""
    from tqdm import tqdm

    from llava_tuning.generate import _image_for
    from retrieval.vocabulary import item_values
    from synth_data.explain import Evidence, vet
    from synth_data.grounding import catalog_backed_sentences, forbidden_phrases
    from synth_data.prompts import rationale_prompt

    products = list(products)
    counts = {"written": 0, "checked": 0, "failed": 0}
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f, tqdm(total=len(products), desc="describe items", unit="item", disable=not progress) as bar:
        for start in range(0, len(products), batch_size):
            chunk = products[start : start + batch_size]
            convs = [[{"from": "human", "value": rationale_prompt(describe_request(p), p)}] for p in chunk]
            images = [_image_for(p, explainer.image_root) for p in chunk]
            banned = [forbidden_phrases(item_values(p)) for p in chunk]
            texts = explainer.generator.generate(convs, images, banned=banned)
            for p, text in zip(chunk, texts):
                text = catalog_backed_sentences(whole_sentences(" ".join(text.split())), p)
                _, reason = vet(text, "", p, Evidence(request="")) if text else (None, "no sentence backed word by word by the catalog")
                rec: dict[str, Any] = {"id": p.id, "text": text, "model": model_name, "checked": reason is None}
                if reason:
                    rec["reason"] = reason
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                counts["written"] += 1
                counts["checked" if reason is None else "failed"] += 1
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
    """Fold `path.rank*` shards into `path` (atomically), keeping the first line per id."""
    from retrieval.artifacts import atomic_write_text

    lines: dict[str, str] = {}
    shards = sorted(path.parent.glob(path.name + ".rank*"))
    for p in [path, *shards]:
        if p.exists():
            for line in p.read_text().splitlines():
                if line.strip():
                    try:
                        lines.setdefault(str(json.loads(line)["id"]), line)
                    except (ValueError, KeyError):
                        continue
    if shards or path.exists():
        atomic_write_text(path, "".join(line + "\n" for line in lines.values()))
    for p in shards:
        p.unlink()
    return len(lines)


def describe_catalog(config: str | Path, model: str | None = None, batch_size: int = 8, limit: int | None = None,
                     ids: list[str] | None = None, threads: int | None = None, out: str | Path | None = None,
                     **model_overrides: Any) -> dict[str, Any]:
    """The job behind `whyrec index describe`: every catalog item (or `ids`, or the first `limit`)
    not yet in the cache. `model`: an adapter / merged dir / preset (default: the config's
    serve.explainer_options.model); `out`: another file than <index dir>/item_text.jsonl (an index
    one may not write to)."""
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
    done = done_ids(out)
    todo = [catalog[i] for i in wanted if i not in done][rank::world]
    t0 = time.time()
    counts = {"written": 0, "checked": 0, "failed": 0}
    if todo:
        explainer = LlavaExplainer(model=model, threads=threads, **model_overrides)
        if accelerator is not None:
            explainer.generator.model.to(accelerator.device)
        target = out if world == 1 else out.with_name(f"{out.name}.rank{rank}")
        counts = describe_items(explainer, todo, target, str(model), batch_size, progress=rank == 0)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    total = merge_shards(out) if rank == 0 and world > 1 else len(done) + counts["written"]
    return {"file": str(out), "model": str(model), "skipped_done": len(done & set(wanted)), **counts, "in_file": total,
            "seconds": round(time.time() - t0, 1), "items_per_s": round(counts["written"] / max(1e-9, time.time() - t0), 3),
            "processes": world}
