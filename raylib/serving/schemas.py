"""Request and response models of the raylib HTTP service (`raylib.serving`): the limits every body is held to."""

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from raylib.methods.corella.routing import MAX_ENTROPY
from raylib.methods.nextitem.recommender import ADAPTER_ID

MAX_HISTORY = 50
MAX_BATCH = 64
MAX_TEXT = 300


def _texts(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for item in value for v in _texts(item)] if isinstance(value, (list, tuple)) else []


def check_text(model: BaseModel) -> None:
    """Every string of a request must be text UTF-8 can carry: JSON lets a lone surrogate (`"\\ud800"`) through,
    which the tokenizer and the response encoder cannot take."""
    for name in type(model).model_fields:
        for text in _texts(getattr(model, name)):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{name}: a lone surrogate is not text (send UTF-8)") from None


class Sample(BaseModel):
    """One "will this user like this item" question: the CTR table's columns (`raylib.data.ctr`) but the label."""
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=64)
    item_id: str = Field(min_length=1, max_length=64)
    age: str = Field("", max_length=16)
    gender: str = Field("", max_length=16)
    occupation: str = Field("", max_length=64)
    zip: str = Field("", max_length=16)
    year: str = Field("", max_length=8)
    genres: list[str] = Field(default_factory=list, max_length=32)
    title: str = Field(min_length=1, max_length=MAX_TEXT)
    history_items: list[str] = Field(default_factory=list, max_length=MAX_HISTORY)
    history_titles: list[str] = Field(default_factory=list, max_length=MAX_HISTORY)
    history_ratings: list[float] = Field(default_factory=list, max_length=MAX_HISTORY)

    @model_validator(mode="after")
    def _consistent(self) -> "Sample":
        if not len(self.history_items) == len(self.history_titles) == len(self.history_ratings):
            raise ValueError("history_items, history_titles and history_ratings must have the same length")
        if any(not math.isfinite(r) or not 0 <= r <= 100 for r in self.history_ratings):
            raise ValueError("history_ratings must be finite numbers in [0, 100]")
        if any(len(t) > MAX_TEXT for t in self.history_titles + self.genres):
            raise ValueError(f"titles and genres must be at most {MAX_TEXT} characters")
        check_text(self)
        return self


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    samples: list[Sample] = Field(min_length=1, max_length=MAX_BATCH)


class Prediction(BaseModel):
    probability: float
    routed_to: Literal["crm", "llm"]
    degraded: bool = False  # the LLM should have answered but failed or timed out: this is the CRM's answer
    crm_probability: float
    entropy: float


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    latency_ms: float
    threshold: float


class RecommendRequest(BaseModel):
    """BIGRec top-K: the user's history as catalogue item ids, oldest first."""
    model_config = ConfigDict(extra="forbid")
    history: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(min_length=1, max_length=MAX_HISTORY)
    k: int = Field(10, ge=1, le=100)
    adapter: str = Field("bigrec", pattern=ADAPTER_ID.pattern, description="which tuned adapter generates")
    exclude_history: bool = Field(True, description="leave the history's own items out of the top-k")
    constrained: bool | None = Field(None, description="generate only catalogue titles (a token trie); "
                                                      "default: as the recommender was published")

    @model_validator(mode="after")
    def _text(self) -> "RecommendRequest":
        check_text(self)
        return self


class RecommendedItem(BaseModel):
    item_id: str
    title: str
    score: float  # grounding distance, re-weighted by popularity: lower is better


class RecommendResponse(BaseModel):
    items: list[RecommendedItem]
    generated: str  # the title the adapter wrote, before grounding
    adapter: str
    gamma: float
    latency_ms: float


class RouterSettings(BaseModel):
    """The router's `user_config`, applied live by `serve deploy`: checked whole (a misspelt key, a timeout of 0,
    NaN or below, a threshold outside [0, ln 2]) before any of it is applied."""
    model_config = ConfigDict(extra="forbid")
    llm_timeout_s: float = Field(10.0, gt=0, allow_inf_nan=False, description="past this the CRM answers, degraded")
    crm_timeout_s: float = Field(10.0, gt=0, allow_inf_nan=False, description="past this /predict is a 504")
    generator_timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False, description="past this /recommend is a 504")
    threshold: float | None = Field(None, ge=0, le=MAX_ENTROPY, allow_inf_nan=False,
                                    description="overrides routing.json's tuned threshold")
    breaker_failures: int = Field(3, ge=1, description="LLM failures in a row that open the breaker")
    breaker_cooldown_s: float = Field(30.0, ge=0, allow_inf_nan=False,
                                      description="while open, uncertain samples get the CRM's answer at once")
