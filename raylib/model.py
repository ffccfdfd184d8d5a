"""Base model, tokenizer, dtype/device choice and LoRA (TALLRec Sec. 3.2: LoRA on the attention projections)."""

from __future__ import annotations

from pathlib import Path

import torch

from raylib import RaylibError
from raylib.assets import EMBEDDED_MODEL_NAME, embedded_model_dir
from raylib.config import LoraSettings, ModelConfig


def resolve_model_path(name: str) -> str:
    """The embedded name maps to the cached safetensors folder; a local folder or HF id passes through."""
    if name == EMBEDDED_MODEL_NAME:
        return str(embedded_model_dir())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise RaylibError(f"Model folder {path} has no config.json: give a Hugging Face model folder.")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise RaylibError(f"Model path {name} does not exist.")
    if "/" not in name:
        raise RaylibError(
            f"Unknown model {name!r}: use {EMBEDDED_MODEL_NAME!r}, a Hugging Face id such as "
            "'meta-llama/Llama-2-7b-hf', or a local model folder."
        )
    return name  # a Hugging Face hub id, downloaded (or read from the HF cache) by transformers


def cpu_supports_bf16() -> bool:
    """bf16 matmuls are fast on CPUs with AVX512-bf16 or AMX; elsewhere they are emulated and slow."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def choose_dtype(requested: str, device: torch.device | str) -> torch.dtype:
    device = torch.device(device)
    if requested == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
             "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
    if requested not in table:
        raise RaylibError(f"model.dtype={requested!r} is not one of auto, {', '.join(table)}.")
    return table[requested]


def load_tokenizer(config: ModelConfig):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path(config.name), trust_remote_code=config.trust_remote_code
    )
    if tokenizer.pad_token_id is None:
        # LLaMA tokenizers ship without a pad token; padding positions are masked, so any id works.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    tokenizer.padding_side = "left"  # the answer position is then always the last one
    return tokenizer


def load_model(config: ModelConfig, device: torch.device | str = "cpu", dtype: torch.dtype | None = None):
    from transformers import AutoModelForCausalLM

    dtype = dtype or choose_dtype(config.dtype, device)
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(config.name), dtype=dtype, trust_remote_code=config.trust_remote_code
    )
    return model.to(device)


def lora_config(settings: LoraSettings):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
    )


def add_lora(model, settings: LoraSettings):
    from peft import get_peft_model

    missing = [m for m in settings.target_modules if not any(n.endswith(m) for n, _ in model.named_modules())]
    if missing:
        raise RaylibError(f"lora.target_modules {missing} match no module of this model.")
    # Adapters stay in the base model's dtype: fp32 adapters on a bf16 model cost a cast per LoRA layer (~20% of a
    # CPU step here), and DeepSpeed's ZeRO optimizer keeps fp32 master copies of them for the update anyway.
    return get_peft_model(model, lora_config(settings), autocast_adapter_dtype=False)
