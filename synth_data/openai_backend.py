"""The `openai` generator: answers written by any OpenAI-compatible Chat Completions endpoint.

Through the official `openai` client (base_url, model and key from `synth.openai`), with the
item's photo as a base64 data URL, JSON output, its own retries with exponential backoff and
jitter on 429 / 5xx / timeouts / dropped connections (honouring Retry-After), a limit on requests
in flight, an on-disk cache keyed by a hash of the full request (a rerun sends nothing) and token
accounting. A reply that is not the JSON asked for is counted as malformed and its task rejected.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
from PIL import Image

from retrieval.artifacts import atomic_write_json
from synth_data.config import OpenAIConfig
from synth_data.generators import Answer, human_description
from synth_data.prompts import SYSTEM_PROMPT, openai_user_text, parse_answer
from synth_data.tasks import Task

log = logging.getLogger(__name__)

RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError)


def image_data_url(path: str | Path, max_side: int = 512) -> str:
    """A photo as a data URL; downscaled to `max_side` (JPEG) so the request stays small."""
    path = Path(path)
    if max_side <= 0:
        mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
        return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


class ResponseCache:
    """One JSON file per request hash under a directory; written atomically."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("unreadable cache entry %s; asking again", path)
            return None

    def put(self, key: str, value: dict) -> None:
        atomic_write_json(self._path(key), value)


def request_key(payload: dict, base_url: str) -> str:
    """Hash of everything that decides the reply: endpoint, model, messages (images included), settings."""
    blob = json.dumps({"base_url": base_url, **payload}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class OpenAIGenerator:
    name = "openai"

    def __init__(self, config: OpenAIConfig, client: "openai.OpenAI | None" = None):
        self.config = config
        key = config.api_key or os.environ.get(config.api_key_env)
        if client is None and not key:
            raise ValueError(f"no API key for the openai backend: set ${config.api_key_env} or synth.openai.api_key")
        # retries are ours (counted, with backoff), so the client's own are off
        self.client = client or openai.OpenAI(base_url=config.base_url, api_key=key, max_retries=0, timeout=config.timeout_s)
        self.cache = ResponseCache(config.cache_dir)
        self.counters: Counter = Counter()
        self._lock = threading.Lock()
        self._rng = random.Random(0)

    def _count(self, **amounts: int) -> None:
        with self._lock:
            self.counters.update(amounts)

    def payload(self, task: Task) -> dict:
        content: list[dict] = [{"type": "text", "text": openai_user_text(task)}]
        if self.config.send_images:
            for path in task.images:
                if Path(path).exists():
                    content.append({"type": "image_url", "image_url": {"url": image_data_url(path, self.config.image_max_side)}})
        body = {
            "model": self.config.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}],
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        if self.config.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def _delay(self, attempt: int, err: Exception) -> float:
        delay = min(self.config.backoff_max_s, self.config.backoff_s * 2**attempt)
        delay *= 0.5 + self._rng.random() / 2  # jitter, so parallel workers do not retry in step
        response = getattr(err, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.config.backoff_max_s))
            except ValueError:
                pass
        return delay

    def _create(self, payload: dict):
        for attempt in range(self.config.max_retries + 1):
            self._count(requests=1)
            try:
                return self.client.chat.completions.create(**payload)
            except RETRYABLE as err:
                status = getattr(err, "status_code", None) or type(err).__name__
                if attempt == self.config.max_retries:
                    raise
                delay = self._delay(attempt, err)
                self._count(retries=1, **{f"retry_{status}": 1})
                log.info("openai request failed (%s); retry %d in %.2fs", status, attempt + 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def answer_one(self, task: Task) -> Answer:
        if task.kind == "description" and set(task.withhold) >= {"title", "description", "attributes"}:
            # describe-from-picture learns the catalog's human-written description itself: nothing to ask a model
            text = human_description(task.item)
            self._count(human_descriptions=1)
            return Answer(text, error=None if text else "no usable human description")
        payload = self.payload(task)
        key = request_key(payload, self.config.base_url)
        hit = self.cache.get(key)
        cached = hit is not None
        if cached:
            self._count(cache_hits=1)
            content, usage = hit.get("content"), hit.get("usage") or {}
        else:
            try:
                resp = self._create(payload)
            except openai.OpenAIError as err:
                self._count(failed=1)
                return Answer(None, error=f"request failed: {type(err).__name__}: {err}"[:300])
            content = resp.choices[0].message.content if resp.choices else None
            usage = resp.usage.model_dump() if getattr(resp, "usage", None) else {}
            usage = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens") if usage.get(k) is not None}
            self._count(**{k: int(v) for k, v in usage.items()})
            self.cache.put(key, {"content": content, "usage": usage, "model": getattr(resp, "model", None)})
        try:
            text = parse_answer(content)
        except ValueError as err:
            self._count(malformed=1)
            return Answer(None, error=f"malformed: {err}", usage=usage, cached=cached)
        self._count(answers=1)
        return Answer(text, usage=usage, cached=cached)

    def answer_many(self, tasks: list[Task]) -> list[Answer]:
        if self.config.concurrency == 1 or len(tasks) <= 1:
            return [self.answer_one(t) for t in tasks]
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(self.answer_one, tasks))

    def stats(self) -> dict:
        with self._lock:
            out = dict(self.counters)
        for k in ("requests", "retries", "cache_hits", "malformed", "failed", "answers",
                  "prompt_tokens", "completion_tokens", "total_tokens"):
            out.setdefault(k, 0)
        return out
