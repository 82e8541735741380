"""Time to first token and to the full answer of the chat endpoint, streamed through the official
`openai` client against `whyrec serve` (started here as its own process, or --url).

With `--explainer llava` the rationales are written by the (tuned) LLaVA and stream out token by
token, checked clause by clause; the bench then also reports the time to the first piece the
model wrote (the answer's first line is the assistant's own template text, so it comes first).

    python bench/chat_stream.py --config configs/demo.yaml [--explainer llava --model var/tune/run]

Prints one JSON object per explainer: p50 / p95 / max of first token, first model token and
full answer (ms), over the first turns of the dev conversations and a follow-up each.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eval.chat_eval import load_conversations  # noqa: E402
from eval.server import start_server  # noqa: E402
from retrieval.config import load_yaml  # noqa: E402


def percentiles(xs: list[float]) -> dict[str, float]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return {}
    return {"n": len(xs), "p50_ms": round(float(np.percentile(xs, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(xs, 95)) * 1000, 1), "max_ms": round(max(xs) * 1000, 1)}


def run(url: str, conversations: list[dict], turns: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="not-needed", max_retries=0, timeout=900)
    first, first_model, full, backends = [], [], [], {}
    for conv in conversations:
        messages: list[dict] = []
        for turn in conv["turns"][:turns]:
            messages.append({"role": "user", "content": turn["say"]})
            t0 = time.perf_counter()
            t_first = t_model = None
            text = ""
            extra = {}
            for chunk in client.chat.completions.create(model="whyrec", messages=messages, stream=True):
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    now = time.perf_counter() - t0
                    t_first = t_first if t_first is not None else now
                    if t_model is None and "\n1. " in text and "): " in text.split("\n1. ", 1)[1]:
                        t_model = now  # the first piece after "1. Title (item ID): " is the explainer's
                    text += delta
                extra = (chunk.model_extra or {}).get("whyrec") or extra
            full.append(time.perf_counter() - t0)
            first.append(t_first)
            if t_model is not None:
                first_model.append(t_model)
            for g in (extra.get("grounding") or {}).get("items") or []:
                key = g["backend"] + (" (fallback)" if g.get("fallback_reason") else "")
                backends[key] = backends.get(key, 0) + 1
            messages.append({"role": "assistant", "content": text})
    return {"turns": len(full), "first_token": percentiles(first), "first_explainer_token": percentiles(first_model),
            "full_answer": percentiles(full), "rationales_by_backend": backends}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--url", help="a running server (default: start one per explainer)")
    ap.add_argument("--explainer", nargs="+", default=["grounded"], help="grounded and/or llava")
    ap.add_argument("--model", help="llava: a tuned adapter / merged dir / preset (default the explainer's default)")
    ap.add_argument("--model-cache", help="llava: where an assembled base model is cached (preset cache_dir)")
    ap.add_argument("--conversations", type=int, default=8, help="how many dev conversations")
    ap.add_argument("--turns", type=int, default=2, help="turns played per conversation")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    convs = [c for c in load_conversations() if c["split"] == "dev"][: args.conversations]
    out = {"config": args.config, "cpu_load_1min": round(os.getloadavg()[0], 2)}
    for name in args.explainer:
        if args.url:
            out[name] = run(args.url, convs, args.turns)
            continue
        cfg = load_yaml(args.config)
        serve = {**(cfg.get("serve") or {}), "explainer": name, "explain_cache_size": 0}
        if name == "llava":
            serve["explainer_options"] = {k: v for k, v in (("model", args.model), ("cache_dir", args.model_cache)) if v}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump({**cfg, "serve": serve}, f)
        proc, url = start_server(f.name, timeout=900)
        try:
            out[name] = run(url, convs, args.turns)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            Path(f.name).unlink(missing_ok=True)
    out["cpu_load_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
