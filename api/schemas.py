"""Request and response bodies (pydantic). Limits that depend on settings (k, query length) are
checked in the routes against `Settings`, and reported as 422 like any schema violation."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# hard ceilings the schema states; the configured limits (Settings.max_k ...) may only be lower
K_CEILING = 1000
QUERY_CEILING = 4000
HISTORY_CEILING = 1000


def _strip_nonempty(v: str | None, name: str) -> str | None:
    if v is None:
        return None
    v = v.strip()
    if not v:
        raise ValueError(f"{name} must not be empty or blank")
    return v


class ErrorOut(BaseModel):
    detail: str


class Filters(BaseModel):
    """Structured constraints applied after retrieval: every given attribute must match exactly
    (case-insensitive) the item's fact of that name, e.g. {"colour": "Black", "department": "Ladieswear"}."""

    model_config = ConfigDict(extra="forbid")
    attributes: dict[str, str] = Field(default_factory=dict, description="fact name -> required value")
    max_price: float | None = Field(None, ge=0)
    min_price: float | None = Field(None, ge=0)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.attributes)
        if self.max_price is not None:
            out["max_price"] = self.max_price
        if self.min_price is not None:
            out["min_price"] = self.min_price
        return out


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(..., min_length=1, max_length=QUERY_CEILING, examples=["black ankle boots"])
    k: int | None = Field(None, ge=1, le=K_CEILING, description="results wanted (default from settings)")
    filters: Filters | None = None
    explain: bool = Field(True, description="attach a grounded rationale to each result")

    _q = field_validator("query")(lambda v: _strip_nonempty(v, "query"))


class RecommendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str | None = Field(None, min_length=1, max_length=200, description="a shopper from the interactions")
    history: list[str] | None = Field(None, max_length=HISTORY_CEILING, description="item ids, oldest first")
    k: int | None = Field(None, ge=1, le=K_CEILING)
    query: str | None = Field(None, max_length=QUERY_CEILING, description="optional text blended with the history")
    explain: bool = True

    _q = field_validator("query")(lambda v: _strip_nonempty(v, "query"))

    @model_validator(mode="after")
    def _one_source(self):
        if not self.user_id and not self.history:
            raise ValueError("give user_id or a non-empty history")
        if self.user_id and self.history:
            raise ValueError("give user_id or history, not both")
        return self


class ExplainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(..., min_length=1, max_length=200)
    query: str | None = Field(None, max_length=QUERY_CEILING)
    user_id: str | None = Field(None, min_length=1, max_length=200)
    history: list[str] | None = Field(None, max_length=HISTORY_CEILING)
    backend: str | None = Field(None, max_length=50, description="explainer backend (default from settings)")

    _q = field_validator("query")(lambda v: _strip_nonempty(v, "query"))

    @model_validator(mode="after")
    def _some_request(self):
        if not self.query and not self.user_id and not self.history:
            raise ValueError("give a query, a user_id or a history to explain the item against")
        if self.user_id and self.history:
            raise ValueError("give user_id or history, not both")
        return self


class RationaleOut(BaseModel):
    text: str
    facts_used: list[str] = Field(default_factory=list)
    backend: str
    fallback_reason: str | None = None


class ItemOut(BaseModel):
    id: str
    title: str
    description: str = ""
    image_url: str | None = None
    price: float | None = None
    colour: str = ""
    category: list[str] = Field(default_factory=list)
    attributes: dict[str, str] = Field(default_factory=dict)


class HitOut(ItemOut):
    rank: int
    score: float
    matched: list[str] = Field(default_factory=list, description="query terms the item matches")
    rationale: RationaleOut | None = None


class ResultsOut(BaseModel):
    request: str = Field(description="the request as explained (query text, or a summary of the history)")
    k: int
    results: list[HitOut]
    explainer: str | None = None
    took_ms: float


class ExplainOut(BaseModel):
    item: ItemOut
    rationale: RationaleOut
    evidence: dict[str, Any]
    backend: str


class HealthOut(BaseModel):
    status: Literal["ok"]
    items: int
    index_size: int
    encoder: str
    explainer: str
    explainers_available: list[str]
    shoppers: int
    generation: int = Field(description="increments on each /admin/reload")
    loaded_at: float
    versions: dict[str, str]


class UserOut(BaseModel):
    id: str
    purchases: int
    last: str | None = None


class ReloadOut(BaseModel):
    status: Literal["reloaded"]
    generation: int
    items: int
    seconds: float


# ----- OpenAI-compatible chat -----
class ChatContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    image_url: dict[str, Any] | str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[ChatContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text or "" for p in self.content if p.type == "text")


class ChatCompletionIn(BaseModel):
    """The OpenAI chat-completions request; sampling fields are accepted and ignored (answers are grounded, not sampled)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field("whyrec", max_length=200)
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=200)
    stream: bool = False
    user: str | None = Field(None, max_length=200, description="a shopper id: answers use their history")
    n: int | None = Field(None, ge=1, le=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)

    @model_validator(mode="after")
    def _has_user_message(self):
        if not any(m.role == "user" and m.text().strip() for m in self.messages):
            raise ValueError("messages must contain a non-empty user message")
        return self


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length"]


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionOut(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
    whyrec: dict[str, Any] = Field(default_factory=dict, description="the products named and the grounding behind the answer")


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "whyrec"


class ModelListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]
