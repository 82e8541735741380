"""Request and response bodies (pydantic). Limits that depend on settings (k, query length) are
checked in the routes against `Settings`, and reported as 422 like any schema violation."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# API limits, stated in the OpenAPI schema (so a schema-valid request is never refused)
K_MAX = 100
QUERY_MAX = 1000
HISTORY_MAX = 200
ID_MAX = 200
NONBLANK = r"\S"  # JSON-schema pattern (unanchored): at least one non-space character

# no silent coercion: "5" is not a k, 0 is not false; NaN and Infinity (which Python's JSON reader accepts) are not numbers
REQUEST = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _integral(v: Any) -> Any:
    """JSON Schema counts 8.0 as an integer; so do we (but not 8.5, "8" or true)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


INTEGER_FIELDS = ("k", "n", "max_tokens")


def _lone_surrogate(x: Any) -> str | None:
    """The first string in `x` that is not valid Unicode (a lone surrogate, which JSON's \\ud800 can
    carry): no encoder, tokenizer or response could handle it."""
    if isinstance(x, str):
        try:
            x.encode("utf-8")
        except UnicodeEncodeError:
            return x
        return None
    values = x.values() if isinstance(x, dict) else x if isinstance(x, list) else ()
    return next((s for s in map(_lone_surrogate, values) if s is not None), None)


class RequestBody(BaseModel):
    """Base of request bodies: strict types, except that an integral float counts as an integer;
    text must be valid Unicode."""

    model_config = REQUEST

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        if _lone_surrogate(data) is not None:
            raise ValueError("text is not valid Unicode (a lone surrogate such as \\ud800)")
        return data

    @model_validator(mode="before")
    @classmethod
    def _integral_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(isinstance(data.get(f), float) for f in INTEGER_FIELDS):
            data = {**data, **{f: _integral(data[f]) for f in INTEGER_FIELDS if isinstance(data.get(f), float)}}
        return data


class ErrorOut(BaseModel):
    detail: str


class Filters(BaseModel):
    """Metadata filters (retrieval.search.Filters); every given one must hold."""

    model_config = REQUEST
    category: str | None = Field(None, min_length=1, max_length=200, description="matches any level of the category path")
    colour: str | None = Field(None, min_length=1, max_length=100, description='a colour word; "blue" includes dark and light blue')
    price_min: float | None = Field(None, ge=0)
    price_max: float | None = Field(None, ge=0)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class SearchIn(RequestBody):
    model_config = REQUEST
    query: str = Field(..., min_length=1, max_length=QUERY_MAX, pattern=NONBLANK, examples=["black ankle boots"])
    k: int | None = Field(None, ge=1, le=K_MAX, description="results wanted (default from settings)")
    filters: Filters | None = None
    explain: bool = Field(True, description="attach a grounded rationale to each result")


ONE_OF_SHOPPER = {"anyOf": [{"required": ["user_id"], "properties": {"user_id": {"type": "string"}}},
                            {"required": ["history"], "properties": {"history": {"type": "array", "minItems": 1}}}]}


class RecommendIn(RequestBody):
    """A shopper by id, or a history of item ids, or both (the history is then appended to the shopper's)."""

    model_config = ConfigDict(**REQUEST, json_schema_extra=ONE_OF_SHOPPER)
    user_id: str | None = Field(None, min_length=1, max_length=ID_MAX, description="a shopper from the interactions")
    history: list[str] | None = Field(None, max_length=HISTORY_MAX, description="item ids, oldest first")
    k: int | None = Field(None, ge=1, le=K_MAX)
    query: str | None = Field(None, min_length=1, max_length=QUERY_MAX, pattern=NONBLANK,
                              description="optional words blended with the history")
    exclude_bought: bool | None = Field(None, description="leave out items the shopper already bought (default: the config's)")
    explain: bool = True

    @model_validator(mode="after")
    def _some_shopper(self):
        if not self.user_id and not self.history:
            raise ValueError("give a user_id or a non-empty history")
        return self


class ExplainIn(RequestBody):
    """Explain an item against a query, a shopper (user_id and/or history), both, or (none given) on its own."""

    model_config = REQUEST
    item_id: str = Field(..., min_length=1, max_length=ID_MAX)
    query: str | None = Field(None, min_length=1, max_length=QUERY_MAX, pattern=NONBLANK)
    user_id: str | None = Field(None, min_length=1, max_length=ID_MAX)
    history: list[str] | None = Field(None, max_length=HISTORY_MAX)
    backend: str | None = Field(None, min_length=1, max_length=50, description="explainer backend (default from settings)")


class RationaleOut(BaseModel):
    text: str = Field(description="shopper-facing: states no attribute the catalog contradicts or does not back (beyond "
                                  "the server's limit, 0 by default), and no scores")
    facts_used: list[str] = Field(default_factory=list)
    backend: str
    fallback_reason: str | None = Field(None, description="why the asked backend's text was replaced (always set when it was)")
    unverified: list[str] = Field(default_factory=list, description="attribute claims in the text the catalog does not settle")


class ItemOut(BaseModel):
    id: str
    title: str
    description: str = ""
    image_url: str | None = None
    price: float | None = None
    colour: str = ""
    category: list[str] = Field(default_factory=list)
    attributes: dict[str, str] = Field(default_factory=dict)


class ReasonOut(BaseModel):
    """Why the recommender chose an item, from the shopper's history or co-occurrence data; every claim checked."""

    kind: str = Field(description="bought_before | other_colour | like_purchase | popular | same_series | placed_together | "
                                  "bought_together | category_pair | similar")
    text: str
    item_id: str | None = Field(None, description="the history item the reason points at")
    day: str | None = Field(None, description="the day that item was bought (ISO)")
    checked: bool = Field(True, description="every claim backed by the catalog and the purchase records")
    problems: list[str] = Field(default_factory=list, description="claims that failed the check (the text was then replaced)")


class HitOut(ItemOut):
    rank: int
    score: float
    dense: float = Field(description="similarity in the joint image-text space (the score before query facts are fused in)")
    matched: list[str] = Field(default_factory=list, description="query terms the item matches")
    because: str | None = Field(None, description="recommend: the history item it is most like")
    reason: ReasonOut | None = Field(None, description="recommend / goes-with: the recommender's own reason")
    rationale: RationaleOut | None = None


class CategoryGuessOut(BaseModel):
    label: str
    probability: float


class ResultsOut(BaseModel):
    request: str = Field(description="the words the rationales are written against (\"\" = the items on their own facts)")
    label: str = Field(description="what the results answer, for display")
    k: int
    results: list[HitOut]
    explainer: str | None = None
    took_ms: float
    predicted_category: list[CategoryGuessOut] | None = Field(None, description="/search/image: the photo's likeliest product types (linear category head)")


class RationaleEventOut(BaseModel):
    """One `rationale` event of /search/stream: the rationale of the result at `rank`."""

    rank: int
    id: str
    rationale: RationaleOut


class StreamDoneOut(BaseModel):
    """The `done` event of /search/stream."""

    rationales: int
    took_ms: float = Field(description="from the request to the last rationale")


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
    last: str | None = Field(None, description="date of the shopper's last purchase (YYYY-MM-DD)")


class ReloadOut(BaseModel):
    status: Literal["reloaded"]
    generation: int
    items: int
    seconds: float


# ----- OpenAI-compatible chat -----
class ChatContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None
    image_url: dict[str, Any] | str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[ChatContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text or "" for p in self.content if p.type == "text")


class ChatCompletionIn(RequestBody):
    """The OpenAI chat-completions request; sampling fields are accepted and ignored (answers are grounded, not sampled)."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str = Field("whyrec", max_length=200)
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=200, description="the last user message is answered")
    stream: bool = False
    user: str | None = Field(None, max_length=200, description="a shopper id: answers use their history")
    n: int | None = Field(None, ge=1, le=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)



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
