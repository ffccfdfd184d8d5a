"""DeepSpeed config for ZeRO stage 2/3 LoRA tuning, with optional CPU offload of optimizer and params."""

from __future__ import annotations

from typing import Any

import torch

from raylib import RaylibError
from raylib.config import TrainConfig


def batch_geometry(train: TrainConfig, n_train: int, world_size: int) -> tuple[int, int]:
    """(micro batch per worker, gradient accumulation steps). The global batch is capped at the number of
    training samples, as TALLRec's few-shot runs (16 samples with batch 128) take one step per epoch."""
    global_batch = max(1, min(train.batch_size, n_train))
    micro = max(1, min(train.micro_batch_size, -(-global_batch // world_size)))
    accumulation = max(1, global_batch // (micro * world_size))
    return micro, accumulation


def deepspeed_config(train: TrainConfig, dtype: torch.dtype, micro_batch: int, accumulation: int,
                     world_size: int) -> dict[str, Any]:
    if train.zero_stage not in (0, 1, 2, 3):
        raise RaylibError(f"train.zero_stage={train.zero_stage} must be 0, 1, 2 or 3.")
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if train.offload_params:
        if train.zero_stage != 3:
            raise RaylibError("train.offload_params needs train.zero_stage=3.")
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    zero.update(train.zero_extra)
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro_batch * accumulation * world_size,
        "gradient_clipping": 1.0,  # HF Trainer's default max_grad_norm, which TALLRec's code used
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16, "initial_scale_power": 16},
        "zero_optimization": zero,
        # We pass a torch AdamW: DeepSpeed's fused Adam would JIT-compile and is no faster for LoRA's few params.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
