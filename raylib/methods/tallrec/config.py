"""TALLRec's config sections (Bao et al., RecSys 2023): its data (records from MovieLens or files), scoring, the job."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from raylib.config import STRICT, DataSource, Dtype, ExistingFile, Seed, TrainJob


@dataclass(config=STRICT)
class DataConfig(DataSource):
    """TALLRec records (`DataSource`): built from MovieLens (split by user) or from `dataset` (records whose
    target falls in each period of the shared time split), or read from the user's files."""
    # source: files: TALLRec-format JSON, JSONL or Parquet records; the validation and test files are optional.
    train_file: ExistingFile | None = None
    valid_file: ExistingFile | None = None
    test_file: ExistingFile | None = None
    FILES_NEEDED: ClassVar[tuple[str, ...]] = ("train_file",)
    FILES_ARE: ClassVar[str] = "TALLRec-format .json/.jsonl/.parquet"
    # `time_split` cuts datasets only (`dataset`, or RecCocktail's dataset domains): MovieLens records are split
    # by user (below), and the job refuses another value where nothing reads it.
    # TALLRec Sec. 4.1: ratings > 3 are "like"; 10 most recent rated items form the history.
    like_threshold: float = 3.0
    history_len: int = Field(10, ge=1)
    # Fractions of users held out for validation / test when records are built from MovieLens.
    valid_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    # Few-shot training sample (TALLRec: 16 / 64 / 256); 0 = all training records. The validation sample is
    # stratified by label, so AUC is defined even for small samples.
    train_samples: int = Field(64, ge=0)
    valid_samples: int = Field(256, ge=0)
    test_samples: int = Field(0, ge=0)
    seed: Seed = 42
    # The few-shot training sample's own seed (None: `seed`): a data-budget curve draws its N records again per
    # seed while the validation and test samples stay the same.
    train_seed: Seed | None = None
    # TALLRec's cutoff_len; prompts longer than this lose whole history items (oldest first), never the question.
    max_length: int = Field(512, ge=16)
    # No longer read: records are built as columns (seconds even at millions of interactions), not cached. Kept
    # so that caches keyed by this section stay valid; a value is refused.
    cache_dir: str | None = None

    @field_validator("cache_dir")
    @classmethod
    def _no_cache(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError("records are no longer cached (they are built as columns in seconds): remove it")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "DataConfig":
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise ValueError("valid_fraction + test_fraction must leave users for training")
        return self


@dataclass(config=STRICT)
class EvalConfig:
    # Scoring dtype, by the dtype rule: "auto" = fp32 on CPUs (bf16 moved AUC by up to 0.03 here and made it
    # depend on the batch size), bf16 on GPUs that have it (a 7B model's fp32 weights alone exceed a 24 GB card).
    dtype: Dtype = "auto"
    # "pair": softmax over the Yes/No first-token logits = p_yes / (p_yes + p_no). "tallrec": the original
    # code's evaluate.py, softmax([p_yes, p_no]) of the full-vocabulary probabilities (ranks differently).
    scoring: Literal["pair", "tallrec"] = "pair"
    batch_size: int = Field(16, ge=1)
    # Run the prompt prefix every record shares (template + instruction) once and reuse its key/value cache.
    prefix_cache: bool = True


@dataclass(config=STRICT)
class TallrecJobConfig(TrainJob):
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    output_dir: str = Field("runs/tallrec", min_length=1)
    skip_zero_shot: bool = False

    @model_validator(mode="after")
    def _time_split_read(self) -> "TallrecJobConfig":
        """TALLRec cuts only a `dataset` at the time split; MovieLens records are split by user, files are split."""
        if self.data.moves_the_split() and not self.data.dataset:
            raise ValueError("data.time_split cuts data.dataset only (MovieLens records are split by user: "
                             "valid_fraction / test_fraction; files name their own splits): remove it")
        return self
