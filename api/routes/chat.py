"""OpenAI-compatible chat completions (streaming SSE and not), so existing chat clients and the
`openai` package talk to whyrec. Answers are grounded (see api.chat). With a model explainer the
words stream out as the model writes them; template text goes out in pieces of a few words. The
`whyrec` object (products named, how the turn was understood, the state) rides on the response and
on the last chunk of a stream, where the official client keeps it in `model_extra`."""
from __future__ import annotations

import json
import re
import time
import uuid
from typing import Iterator

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api import chat
from api.deps import Engine, get_engine, get_settings
from api.schemas import (ChatChoice, ChatChoiceMessage, ChatCompletionIn, ChatCompletionOut, ChatUsage, ErrorOut, ModelListOut,
                         ModelOut)
from api.settings import Settings
from api.uploads import UploadError

router = APIRouter(tags=["chat"])
STARTED = int(time.time())


@router.get("/v1/models", response_model=ModelListOut, summary="The one model name chat clients may use")
def models(settings: Settings = Depends(get_settings)) -> ModelListOut:
    return ModelListOut(data=[ModelOut(id=settings.chat_model, created=STARTED)])


@router.post("/v1/chat/completions", response_model=ChatCompletionOut,
             responses={200: {"content": {"text/event-stream": {"description": "chat.completion.chunk events when stream=true"}}},
                        400: {"model": ErrorOut, "description": "a broken image"}, 413: {"model": ErrorOut},
                        415: {"model": ErrorOut, "description": "an image that is not data: base64"}},
             summary="Product questions and shopping requests, OpenAI chat-completions style")
async def chat_completions(body: ChatCompletionIn, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)):
    try:
        result = await run_in_threadpool(chat.answer, engine, settings, body.messages, body.user)
    except UploadError as err:
        raise HTTPException(err.status, err.detail) from None
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    model = body.model or settings.chat_model
    prompt_tokens = sum(len(m.text().split()) for m in body.messages)
    if body.stream:
        return StreamingResponse(_sse(cid, created, model, result), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    text = await run_in_threadpool(lambda: result.text)  # a model may be writing: not on the event loop
    completion_tokens = len(text.split())
    return ChatCompletionOut(id=cid, created=created, model=model,
                             choices=[ChatChoice(index=0, message=ChatChoiceMessage(content=text), finish_reason="stop")],
                             usage=ChatUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                             total_tokens=prompt_tokens + completion_tokens), whyrec=result.extra())


def _sse(cid: str, created: int, model: str, result: chat.ChatAnswer) -> Iterator[str]:
    """chat.completion.chunk events as the answer's pieces come (starlette runs this in a thread)."""
    def event(delta: dict, finish: str | None = None, **more) -> str:
        chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    for piece in result.stream():
        for part in _split(piece):
            yield event({"content": part})
    yield event({}, "stop", whyrec=result.extra())
    yield "data: [DONE]\n\n"


def _split(piece: str, words: int = 4) -> Iterator[str]:
    """A long template piece in chunks of a few words (model tokens are short and pass through whole)."""
    tokens = re.findall(r"\S+\s*|\s+", piece)
    if len(tokens) <= words:
        yield piece
        return
    for i in range(0, len(tokens), words):
        yield "".join(tokens[i : i + words])
