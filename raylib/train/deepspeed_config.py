"""DeepSpeed config for ZeRO stage 2/3 LoRA tuning, with optional CPU offload of optimizer and params."""

from __future__ import annotations

from typing import Any

import torch

from raylib.config import TrainConfig
from raylib.train.batching import BatchPlan


def deepspeed_config(train: TrainConfig, dtype: torch.dtype, plan: BatchPlan) -> dict[str, Any]:
    """Ranges and combinations were validated with the config (`raylib.config.TrainConfig`)."""
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if train.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    zero.update(train.zero_extra)
    return {
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.accumulation,
        "train_batch_size": plan.global_batch,
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
