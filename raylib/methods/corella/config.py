"""CoReLLa config sections (Xi et al. 2024): CTR data, DCNv2, the alignment loss, stages, routing, the jobs."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field
from pydantic.dataclasses import dataclass

from raylib.config import (STRICT, DataSource, ExistingFile, Seed, TrainJob, TuneSettings,
                           comma_list)


@dataclass(config=STRICT)
class CtrDataConfig(DataSource):
    """Click-through-rate samples for CoReLLa (`raylib.data.ctr`) from a `DataSource`: one row per rating,
    label = liked."""
    # source: files: CTR tables (Parquet or CSV, the columns of `raylib.data.ctr.CTR_COLUMNS`), one per split.
    train_file: ExistingFile | None = None
    valid_file: ExistingFile | None = None
    test_file: ExistingFile | None = None
    FILES_NEEDED: ClassVar[tuple[str, ...]] = ("train_file", "valid_file", "test_file")
    FILES_ARE: ClassVar[str] = "CTR tables"
    SPLIT_BY_TIME: ClassVar[tuple[str, ...]] = ("movielens", "dataset")
    KEY_RENAMED: ClassVar[dict[str, str]] = {"time_split": "split_fractions"}
    KEY_ADDED: ClassVar[dict[str, tuple]] = {}
    # CoReLLa Sec. 4.1 (MovieLens): ratings >= 4 are positive; samples split 8:1:1 by global timestamp
    # (`time_split`).
    like_threshold: float = 4.0
    # The user's most recent rated items before the sample (pooled ids for the CRM, titles + ratings for the LLM).
    history_len: int = Field(10, ge=0)
    # Characters of the zip code kept as a feature (its region).
    zip_prefix: int = Field(2, ge=1)
    # Fixed seeded subsets the (expensive) LLM scores: validation for the threshold search, test for the report.
    valid_samples: int = Field(1000, ge=0)
    test_samples: int = Field(2000, ge=0)
    seed: Seed = 42
    # Prompt token limit: longer prompts lose their oldest history items, never the question.
    max_length: int = Field(512, ge=32)


@dataclass(config=STRICT)
class CrmSettings:
    """DCNv2 (Wang et al., "DCN V2", WWW 2021), the conventional model; stage 1 trains it alone."""
    embedding_dim: int = Field(16, ge=1)
    cross_layers: int = Field(3, ge=1)
    # 0 = full-rank cross layers (Eq. 1); r > 0 = the low-rank mixture of `experts` experts (Sec. 5, DCN-Mix).
    low_rank: int = Field(0, ge=0)
    experts: int = Field(4, ge=1)
    deep_layers: Annotated[list[int], BeforeValidator(comma_list), Field(min_length=1)] = dataclasses.field(
        default_factory=lambda: [256, 128])
    # Sec. 3: "stacked" = deep tower on the cross network's output; "parallel" = both on the input, concatenated.
    structure: Literal["stacked", "parallel"] = "parallel"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    learning_rate: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(1024, ge=1)
    epochs: int = Field(10, ge=1)
    patience: int = Field(2, ge=0)
    weight_decay: float = Field(0.0, ge=0.0)
    num_workers: int = Field(1, ge=1)


@dataclass(config=STRICT)
class AlignSettings:
    """CoReLLa stage 2 (Sec. 3.3): L = a*L_llm + b*L_crm + c*L_align, L_align = sum over (LLM layer, cross layer)
    pairs of ||g_llm(h_llm) - g_crm(h_crm)||_2^p, g the learned linear projections into a shared space."""
    llm_weight: float = Field(1.0, ge=0.0)  # a
    crm_weight: float = Field(1.0, ge=0.0)  # b
    align_weight: float = Field(0.1, ge=0.0)  # c (0 = the ablation without alignment)
    # [LLM hidden-state index, cross-layer index] pairs; negative counts from the end (-1: last layer of each).
    pairs: list[Annotated[list[int], Field(min_length=2, max_length=2)]] = dataclasses.field(
        default_factory=lambda: [[-1, -1]])
    p: float = Field(2.0, gt=0.0)
    projection_dim: int = Field(64, ge=1)
    # L2-normalise the projected states first (distance then in [0, 2]). The paper leaves their scale open; raw
    # last-layer states made the term ~100x the LLM loss here, and gradient clipping then starved L_llm.
    normalize: bool = True
    # The CRM's (and projections') learning rate in the joint stage; the LoRA weights use train.learning_rate.
    crm_learning_rate: float = Field(1e-4, gt=0.0)


@dataclass(config=STRICT)
class CorellaStages:
    """Random training subsets of the LLM stages (stage 1, the CRM warm-up, uses the whole training split)."""
    joint_samples: int = Field(2048, ge=1)
    llm_samples: int = Field(2048, ge=1)
    # Validation records scored after each LLM-stage epoch (best epoch by LLM AUC).
    valid_samples: int = Field(256, ge=2)


@dataclass(config=STRICT)
class RoutingSettings:
    # Most of the samples the LLM may answer (the threshold search's constraint, on validation).
    llm_budget: float = Field(0.2, gt=0.0, le=1.0)
    # Serve / inference batch for the LLM part.
    batch_size: int = Field(16, ge=1)
    # Routing only where it helps (ours; the paper always routes): this share of the scored validation samples is
    # held out of the threshold search, and routing is kept only when the paired bootstrap interval (`rounds`
    # resamples) of routed AUC minus CRM AUC on them lies above 0; otherwise the CRM answers everything. 0 keeps
    # the paper's behaviour (always route at the searched threshold).
    decision_fraction: float = Field(1 / 3, ge=0.0, lt=1.0)
    bootstrap_rounds: int = Field(1000, ge=100)


@dataclass(config=STRICT)
class CorellaJobConfig(TrainJob):
    """CoReLLa (Xi et al. 2024): `model`/`lora`/`train` configure the two LLM stages (2 joint, 3 LLM-only)."""
    data: CtrDataConfig = dataclasses.field(default_factory=CtrDataConfig)
    crm: CrmSettings = dataclasses.field(default_factory=CrmSettings)
    align: AlignSettings = dataclasses.field(default_factory=AlignSettings)
    stages: CorellaStages = dataclasses.field(default_factory=CorellaStages)
    routing: RoutingSettings = dataclasses.field(default_factory=RoutingSettings)
    tune: TuneSettings = dataclasses.field(default_factory=lambda: TuneSettings(num_samples=30))
    output_dir: str = Field("runs/corella", min_length=1)


@dataclass(config=STRICT)
class CorellaStageJob(CorellaJobConfig):
    """What one LLM stage's workers get: the user's config plus the stage and where its start weights are."""
    stage: Literal["joint", "llm"] = "joint"
    crm_shape: dict[str, Any] = dataclasses.field(default_factory=dict)  # `raylib.methods.corella.crm.DCNv2` arguments
    init_crm: str | None = None  # stage 1's published CRM folder (joint stage)
    init_adapter: str | None = None  # stage 2's adapter (LLM stage)


@dataclass(config=STRICT)
class CrmJobConfig(TrainJob):
    """Stage 1: DCNv2 alone through the shared trainer (ZeRO-0, fp32)."""
    crm: CrmSettings = dataclasses.field(default_factory=CrmSettings)
    crm_shape: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Each item's frozen LLM title vector, aligned to the vocabulary (`raylib.item_text`), or none: plain DCNv2.
    item_text: str | None = None
    # The vocabulary (`CtrVocab` JSON) the samples' field indices come from: published beside the weights, with
    # its hash in config.json, so the CRM folder is whole when the trainer publishes it. Not in the fingerprint:
    # the samples' digest already changes with it.
    vocab: str | None = None
    output_dir: str = Field("runs/crm", min_length=1)
