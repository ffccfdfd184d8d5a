"""BIGRec / GenRec config sections: next-item windows, generation, grounding, the SASRec baseline, the jobs."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from raylib.config import (STRICT, DataSource, Dtype, ExistingFile, Seed, TrainJob,
                           TuneSettings)
from raylib.prompts import GENREC_INSTRUCTIONS


@dataclass(config=STRICT)
class SequenceDataConfig(DataSource):
    """Next-item windows (BIGRec / GenRec / SASRec, `raylib.data.sequences`) from a `DataSource`."""
    # source: files: `interactions_file` (user_id, item_id, timestamp[, rating]) and `items_file` (item_id,
    # title), CSV or Parquet.
    interactions_file: ExistingFile | None = None
    items_file: ExistingFile | None = None
    FILES_NEEDED: ClassVar[tuple[str, ...]] = ("interactions_file", "items_file")
    FILES_ARE: ClassVar[str] = "CSV or Parquet"
    KEY_RENAMED: ClassVar[dict[str, str]] = {"time_split": "time_fractions"}
    KEY_ADDED: ClassVar[dict[str, tuple]] = {}
    # BIGRec Sec. 4.1: the 10 most recent items form the history.
    history_len: int = Field(10, ge=1)
    # BIGRec's few-sample setting trains on 1024 windows; 0 = all training windows.
    train_samples: int = Field(1024, ge=0)
    # Fixed-size seeded samples for the expensive LLM evaluation (0 = all).
    valid_samples: int = Field(200, ge=0)
    test_samples: int = Field(500, ge=0)
    seed: Seed = 42
    # Prompt + response token limit; longer prompts lose whole history items, oldest first.
    max_length: int = Field(512, ge=32)
    domain: str = Field("movie", min_length=1)
    # MovieLens writes "Shining, The (1980)"; the LLM reads and writes "The Shining (1980)" (`readable_title`).
    readable_titles: bool = True
    # The embedded ML-100K named as a dataset gives the very windows of the default source (a test checks it):
    # both find the same cached beams and studies (`raylib.config.key_dict`).
    KEY_NEUTRAL: ClassVar[dict[str, tuple]] = {"dataset": (None, "ml-100k")}


@dataclass(config=STRICT)
class GenerationSettings:
    # BIGRec's inference uses 4 beams; GenRec's 10 (its config sets its own).
    num_beams: int = Field(4, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(16, ge=1)
    # Generation and embedding dtype, by the dtype rule ("auto": bf16 on GPUs that have it, fp32 on CPUs).
    dtype: Dtype = "auto"
    # Constrained decoding (ours, not the papers'): every beam may only spell a catalogue title, following a token
    # trie of the catalogue's answers at each step (`raylib.generation.TokenTrie`); generation then runs up to the
    # longest title's length whatever `max_new_tokens`.
    constrained: bool = False


@dataclass(config=STRICT)
class SasrecSettings:
    """SASRec (Kang & McAuley, ICDM 2018, Sec. III): the conventional sequential baseline and BIGRec's CF signal."""
    # Paper Sec. IV-B: d=50 (ML-1M), 2 blocks, 1 head, dropout 0.2 on ML-1M; lr 1e-3, batch 128.
    hidden_size: int = Field(64, ge=4)
    num_blocks: int = Field(2, ge=1)
    num_heads: int = Field(1, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    learning_rate: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(128, ge=1)
    epochs: int = Field(30, ge=1)
    patience: int = Field(5, ge=0)
    weight_decay: float = Field(0.0, ge=0.0)
    num_workers: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "SasrecSettings":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be a multiple of num_heads={self.num_heads}")
        return self


@dataclass(config=STRICT)
class GroundingSettings:
    """BIGRec step 2 (Sec. 3.2): L2 grounding of generated text to catalogue titles, with re-weighting."""
    batch_size: int = Field(64, ge=1)
    # "last": the last token's final hidden state (BIGRec's code); "mean": the mean over the text's tokens.
    pooling: Literal["last", "mean"] = "last"
    # Catalogue embeddings are cached here, keyed by model + catalogue (default: <cache>/grounding).
    cache_dir: str | None = None
    # gamma of (1 + W)^-gamma (BIGRec Sec. 3.2 Eq. 4), searched on validation with Ray Tune + Optuna, log-uniformly
    # over [gamma_low, gamma_high]: the authors' adjust scripts try 0, 0.01 ... 0.99, 1, 2 ... 99.
    gamma_low: float = Field(0.01, gt=0.0)
    gamma_high: float = Field(100.0, gt=0.0)

    @model_validator(mode="after")
    def _range(self) -> "GroundingSettings":
        if self.gamma_low >= self.gamma_high:
            raise ValueError(f"gamma_low={self.gamma_low} must be below gamma_high={self.gamma_high}")
        return self


@dataclass(config=STRICT)
class NextItemJobConfig(TrainJob):
    """What BIGRec and GenRec share: data, generation, grounding, the SASRec baseline, the gamma search."""
    data: SequenceDataConfig = dataclasses.field(default_factory=SequenceDataConfig)
    generation: GenerationSettings = dataclasses.field(default_factory=GenerationSettings)
    grounding: GroundingSettings = dataclasses.field(default_factory=GroundingSettings)
    sasrec: SasrecSettings = dataclasses.field(default_factory=SasrecSettings)
    tune: TuneSettings = dataclasses.field(default_factory=TuneSettings)
    # Which parts to run: the LLM part always; the baselines / CF re-weighting can be skipped.
    baselines: bool = True
    # Take the items of each window's history out of every method's ranking alike (a user is not recommended what
    # they already watched). Off: the papers' protocol ranks the whole catalogue.
    exclude_seen: bool = False


@dataclass(config=STRICT)
class BigrecJobConfig(NextItemJobConfig):
    output_dir: str = Field("runs/bigrec", min_length=1)


@dataclass(config=STRICT)
class GenrecJobConfig(NextItemJobConfig):
    output_dir: str = Field("runs/genrec", min_length=1)
    # GenRec: its paraphrased instructions (raylib.prompts.GENREC_INSTRUCTIONS), one drawn per training and per test
    # window from the first `num_templates` (its data files mix them in both).
    num_templates: int = Field(len(GENREC_INSTRUCTIONS), ge=1, le=len(GENREC_INSTRUCTIONS))
    generation: GenerationSettings = dataclasses.field(default_factory=lambda: GenerationSettings(num_beams=10))


@dataclass(config=STRICT)
class SasrecJobConfig(TrainJob):
    """SASRec through the shared trainer: `train` comes from `sasrec`; fp32, no DeepSpeed partitioning."""
    sasrec: SasrecSettings = dataclasses.field(default_factory=SasrecSettings)
    num_items: int = Field(1, ge=1)
    history_len: int = Field(10, ge=1)
    output_dir: str = Field("runs/sasrec", min_length=1)
    # Each item's frozen LLM title vector, aligned to the catalogue (`raylib.item_text`), or none: plain SASRec.
    item_text: str | None = None
