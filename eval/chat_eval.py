"""`whyrec eval chat`: play the conversation set (eval/conversations/*.yaml) against a whyrec server
through the official `openai` client and check every turn's rules against the catalog.

The server is one already running (`--url`), or one this command starts (`whyrec serve --config`)
as a child process: eval sits below api and never imports it. Every turn is streamed, as chat
clients do, and timed: time to the first content token, and to the full answer. Prints a JSON
summary (pass rate per turn kind, per split, overall; TTFT and full-answer percentiles) and the
failed turns.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from eval.server import start_server
from retrieval.catalog import Catalog
from retrieval.config import load_yaml
from retrieval.vocabulary import KINDS, Term, item_values, matches

log = logging.getLogger(__name__)

CONVERSATIONS = Path(__file__).parent / "conversations"
KIND_ROUTES = {"request": {"request", "switch"}, "refine": {"refine", "similar"}, "switch": {"switch"},
               "reference": {"similar", "more"}, "question": {"question"}, "compare": {"compare"}}
LIST_RE = re.compile(r"^\s*\d+\.\s.*?\(item ([^)\s]+)\)", re.M)
NAMED_RE = re.compile(r"\(item ([^)\s]+)\)")


def load_conversations(paths: list[str | Path] | None = None) -> list[dict]:
    """Every conversation, each tagged with its file's split."""
    files = [Path(p) for p in paths] if paths else sorted(CONVERSATIONS.glob("*.yaml"))
    out = []
    for f in files:
        data = yaml.safe_load(f.read_text())
        for conv in data["conversations"]:
            for turn in conv["turns"]:
                if turn.get("kind") not in KIND_ROUTES:
                    raise ValueError(f"{f}: {conv['id']}: turn kind must be one of {sorted(KIND_ROUTES)}, not {turn.get('kind')!r}")
            out.append({**conv, "split": conv.get("split", data.get("split", f.stem))})
    return out


@dataclass
class TurnResult:
    conversation: str
    split: str
    index: int
    kind: str
    say: str
    ok: bool
    reasons: list[str] = field(default_factory=list)
    ttft_s: float | None = None
    total_s: float = 0.0
    route: str | None = None
    relaxed: bool = False  # the answer said the catalog has none and dropped a constraint
    answer: str = ""


class Judge:
    """The rules of one turn, checked against the catalog (the vocabulary's reading of each item)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self._values: dict[str, dict] = {}

    def values(self, item_id: str) -> dict:
        if item_id not in self._values:
            self._values[item_id] = item_values(self.catalog.by_id[item_id])
        return self._values[item_id]

    def meets(self, item_id: str, rules: dict[str, str]) -> list[str]:
        """The rules an item breaks ('colour: wants red, has black')."""
        broken = []
        for kind, want in rules.items():
            if kind not in KINDS:
                raise ValueError(f"unknown attribute kind {kind!r} in a rule; known: {KINDS}")
            neg = str(want).startswith("!")
            value = str(want).lstrip("!")
            hit = bool(matches(Term(kind, value, value), self.values(item_id)))
            if hit == neg:
                have = ", ".join(sorted(self.values(item_id).get(kind) or [])) or "nothing"
                broken.append(f"{item_id} {kind}: wants {'not ' if neg else ''}{value}, has {have}")
        return broken

    def price_ok(self, item_id: str, lo: float | None, hi: float | None) -> bool:
        p = self.catalog.by_id[item_id].price
        return p is not None and (lo is None or p >= lo) and (hi is None or p <= hi)

    def any_meets(self, rules: dict, lo: float | None, hi: float | None, exclude: set[str]) -> bool:
        return any(not self.meets(p.id, rules) and (lo is None and hi is None or self.price_ok(p.id, lo, hi))
                   for p in self.catalog.products if p.id not in exclude)


def check_turn(judge: Judge, turn: dict, text: str, extra: dict, lists: list[list[str]], asked: list[str]) -> list[str]:
    """Why a turn failed ([] = passed). `lists`: the listings before this turn; `asked`: earlier question targets."""
    reasons: list[str] = []
    route = extra.get("turn")
    if route not in KIND_ROUTES[turn["kind"]]:
        reasons.append(f"routed as {route!r}, expected one of {sorted(KIND_ROUTES[turn['kind']])}")
    named = NAMED_RE.findall(text)
    unknown = [i for i in named if i not in judge.catalog.by_id]
    if unknown:
        reasons.append(f"names unknown ids {unknown[:3]}")
    if not set(extra.get("products") or []) <= set(named):
        reasons.append("the products list names items the text does not")
    listed = LIST_RE.findall(text)
    prev = lists[-1] if lists else []
    prev_prices = [judge.catalog.by_id[i].price for i in prev if judge.catalog.by_id[i].price is not None]
    lo = turn.get("price_min")
    hi = turn.get("price_max")
    if turn.get("cheaper") and prev_prices:
        hi = min(prev_prices) - 1e-12
    if turn.get("price_below") and prev:
        ref = judge.catalog.by_id[_nth(prev, turn["price_below"])].price
        hi = None if ref is None else ref - 1e-12
    rules = turn.get("all") or {}
    earlier = {i for ls in lists for i in ls}
    if rules or hi is not None or lo is not None:
        broken: list[str] = []
        for i in listed:
            broken += judge.meets(i, rules)
            if (lo is not None or hi is not None) and not judge.price_ok(i, lo, hi):
                broken.append(f"{i} price {judge.catalog.by_id[i].price} outside [{lo}, {hi}]")
        relaxed = bool((extra.get("grounding") or {}).get("relaxed"))
        honest_none = not listed or relaxed  # "the catalog has no ...": right only when it truly has none
        if not listed or (broken and relaxed):
            if judge.any_meets(rules, lo, hi, earlier if turn.get("new") else set()):
                reasons.append("said the catalog has none (listed nothing or dropped a constraint), but it has such items")
        elif broken or (honest_none and not listed):
            reasons += broken
    if turn.get("new") and set(listed) & earlier:
        reasons.append(f"repeats {sorted(set(listed) & earlier)[:3]}")
    if "anchor" in turn:
        anchor = _nth(prev, turn["anchor"])
        first_line = text.splitlines()[0] if text else ""
        if f"(item {anchor})" not in first_line:
            reasons.append(f"the answer does not say it is like {anchor}")
        if anchor in listed:
            reasons.append(f"lists the anchor {anchor} itself")
    if "about" in turn:
        target = asked[-1] if turn["about"] == "same" and asked else _nth(prev, turn["about"]) if prev else None
        if extra.get("products") != [target]:
            reasons.append(f"answered about {extra.get('products')}, expected [{target}]")
    if turn.get("says") and not re.search(turn["says"], text):
        reasons.append(f"answer does not match {turn['says']!r}")
    if turn.get("cheapest") or turn.get("dearest"):
        priced = [i for i in prev if judge.catalog.by_id[i].price is not None]
        if priced:
            prices = [judge.catalog.by_id[i].price for i in priced]
            best = min(prices) if turn.get("cheapest") else max(prices)
            if not re.search(r"(?i)cheapest|dearest|most expensive", text):
                reasons.append("the answer does not say which is cheapest / dearest")
            first = NAMED_RE.search(text)
            if not first or judge.catalog.by_id.get(first.group(1)) is None or judge.catalog.by_id[first.group(1)].price != best:
                reasons.append(f"first product named is not the {'cheapest' if turn.get('cheapest') else 'dearest'} shown")
    if turn.get("yes"):
        sorted_ = (extra.get("grounding") or {}).get("sorted") or {}
        for kind, value in turn["yes"].items():
            for i in prev:
                v = matches(Term(kind, value, value), judge.values(i))
                said = "yes" if i in sorted_.get("yes", []) else "no" if i in sorted_.get("no", []) else "unknown"
                truth = "unknown" if v is None else "yes" if v else "no"
                if said != truth and not (truth == "no" and said == "unknown"):  # "not stated" is never a false claim
                    reasons.append(f"{i}: said {said} for {kind} {value}, catalog says {truth}")
    return reasons


def _nth(ids: list[str], n: int) -> str:
    return ids[n - 1] if n > 0 else ids[n]


def play(client, model: str, judge: Judge, conv: dict) -> list[TurnResult]:
    messages: list[dict] = []
    lists: list[list[str]] = []
    asked: list[str] = []
    results = []
    for n, turn in enumerate(conv["turns"]):
        messages.append({"role": "user", "content": turn["say"]})
        t0 = time.perf_counter()
        ttft = None
        pieces: list[str] = []
        extra: dict[str, Any] = {}
        for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                pieces.append(delta)
            more = (chunk.model_extra or {}).get("whyrec")
            if more:
                extra = more
        total = time.perf_counter() - t0
        text = "".join(pieces)
        reasons = check_turn(judge, turn, text, extra, lists, asked)
        results.append(TurnResult(conv["id"], conv["split"], n, turn["kind"], turn["say"], not reasons, reasons, ttft, total,
                                  extra.get("turn"), bool((extra.get("grounding") or {}).get("relaxed")), text))
        messages.append({"role": "assistant", "content": text})
        listed = LIST_RE.findall(text)
        if listed:
            lists.append(listed)
        if extra.get("turn") == "question":
            asked += extra.get("products") or []
    return results


def summarise(results: list[TurnResult]) -> dict[str, Any]:
    def rate(rs: list[TurnResult]) -> dict[str, Any]:
        return {"turns": len(rs), "passed": sum(r.ok for r in rs), "pass_rate": round(sum(r.ok for r in rs) / max(1, len(rs)), 3)}

    def pct(xs: list[float]) -> dict[str, float]:
        xs = [x for x in xs if x is not None]
        if not xs:
            return {}
        return {"p50_ms": round(float(np.percentile(xs, 50)) * 1000, 1), "p95_ms": round(float(np.percentile(xs, 95)) * 1000, 1),
                "max_ms": round(max(xs) * 1000, 1)}

    kinds = sorted({r.kind for r in results})
    splits = sorted({r.split for r in results})
    convs = {}
    for r in results:
        convs.setdefault((r.split, r.conversation), []).append(r.ok)
    return {"overall": rate(results), "per_kind": {k: rate([r for r in results if r.kind == k]) for k in kinds},
            "per_split": {s: rate([r for r in results if r.split == s]) for s in splits},
            "per_split_kind": {s: {k: rate([r for r in results if r.split == s and r.kind == k]) for k in kinds
                                   if any(r.split == s and r.kind == k for r in results)} for s in splits},
            "conversations_all_passed": sum(all(v) for v in convs.values()), "conversations": len(convs),
            "relaxed_turns": sum(r.relaxed for r in results),
            "time_to_first_token": pct([r.ttft_s for r in results]), "full_answer": pct([r.total_s for r in results]),
            "failed": [{"conversation": r.conversation, "split": r.split, "turn": r.index + 1, "kind": r.kind, "say": r.say,
                        "route": r.route, "reasons": r.reasons[:4]} for r in results if not r.ok]}


def run_chat_eval(config: str, url: str | None = None, files: list[str] | None = None, splits: list[str] | None = None,
                  model: str = "whyrec", out: str | None = None) -> dict[str, Any]:
    """Play the conversations against `url` (or a server started from `config`) and summarise."""
    from openai import OpenAI
    from tqdm import tqdm

    catalog = Catalog.load(load_yaml(config)["catalog"]["dir"])
    judge = Judge(catalog)
    conversations = [c for c in load_conversations(files) if not splits or c["split"] in splits]
    proc = None
    if url is None:
        proc, url = start_server(config)
    try:
        client = OpenAI(base_url=url.rstrip("/") + "/v1", api_key="not-needed", max_retries=0, timeout=600)
        results: list[TurnResult] = []
        for conv in tqdm(conversations, desc="conversations", unit="conv"):
            results += play(client, model, judge, conv)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    summary = {"config": config, "catalog_items": len(catalog), **summarise(results)}
    if out:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        (path / "result.json").write_text(json.dumps(summary, indent=2))
        (path / "turns.jsonl").write_text("".join(json.dumps(r.__dict__) + "\n" for r in results))
    return summary
