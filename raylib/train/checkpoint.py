"""Adapter checkpoints in standard PEFT format (`PeftModel.from_pretrained` loads them), gathered under ZeRO-3.

A reported checkpoint folder holds:
  adapter/            the adapter after the latest epoch (resume starts from it)
  best_adapter/       the adapter with the best validation AUC so far (the run's answer)
  trainer_state.json  epoch, optimizer step, best metric, patience counter, per-epoch history
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "trainer_state.json"
ADAPTER_DIR = "adapter"
BEST_ADAPTER_DIR = "best_adapter"


@dataclasses.dataclass
class TrainerState:
    epoch: int = 0  # completed epochs
    global_step: int = 0  # optimizer steps taken
    best_metric: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    finished: bool = False
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    step_times: list[float] = dataclasses.field(default_factory=list)  # seconds per micro-batch, for benchmarks

    def save(self, folder: Path) -> None:
        (folder / STATE_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, folder: Path) -> "TrainerState":
        return cls(**json.loads((folder / STATE_FILE).read_text()))


def gathered_adapter_state(model, zero_stage: int) -> dict[str, torch.Tensor]:
    """The LoRA tensors as full CPU tensors. Under ZeRO-3 they are partitioned (empty `[0]` shapes locally,
    peft#453 / DeepSpeed#4295), so every rank must enter the gather; the result is used on rank 0."""
    from peft import get_peft_model_state_dict

    if zero_stage != 3:
        return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}
    import deepspeed

    params = [p for p in model.parameters() if p.requires_grad]
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def write_adapter(model, state_dict: dict[str, torch.Tensor], folder: Path) -> None:
    """Write `adapter_config.json` + `adapter_model.safetensors` as `PeftModel.save_pretrained` does."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = model.peft_config["default"]
    config.save_pretrained(str(folder))
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt"})


def load_adapter_into(model, folder: Path) -> None:
    """Load adapter weights (safetensors) into an existing PEFT model before DeepSpeed wraps it."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))


def publish_adapter(source: Path, target: Path, extra: dict[str, Any] | None = None) -> Path:
    """Copy a finished adapter to `target` atomically: a half-copied folder never looks like a finished one."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    if extra:
        (tmp / "training_summary.json").write_text(json.dumps(extra, indent=1, default=str))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target
