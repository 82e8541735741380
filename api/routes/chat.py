"""OpenAI-compatible chat completions (streaming SSE and not), so existing chat clients and the
`openai` package talk to whyrec. The answer is grounded (see api.chat), never sampled."""
from __future__ import annotations

import json
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
    completion_tokens = len(result.text.split())
    extra = {"kind": result.kind, "products": result.products, "grounding": result.grounding}
    if body.stream:
        return StreamingResponse(_sse(cid, created, model, result.text, extra), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return ChatCompletionOut(id=cid, created=created, model=model,
                             choices=[ChatChoice(index=0, message=ChatChoiceMessage(content=result.text), finish_reason="stop")],
                             usage=ChatUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                             total_tokens=prompt_tokens + completion_tokens), whyrec=extra)


def _sse(cid: str, created: int, model: str, text: str, extra: dict) -> Iterator[str]:
    def event(delta: dict, finish: str | None = None, **more) -> str:
        chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    words = text.split(" ")
    for i in range(0, len(words), 4):  # a few words per chunk, as a model would stream tokens
        piece = " ".join(words[i : i + 4])
        yield event({"content": piece if i == 0 else " " + piece})
    yield event({}, "stop", whyrec=extra)
    yield "data: [DONE]\n\n"
