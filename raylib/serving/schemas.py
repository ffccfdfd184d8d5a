"""Request and response models of the raylib HTTP service (`raylib.serving`): the limits every body is held to."""

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from raylib.methods.nextitem.recommender import ADAPTER_ID

MAX_HISTORY = 50
MAX_BATCH = 64
MAX_TEXT = 300


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
