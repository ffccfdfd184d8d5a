"""Base model, tokenizer and LoRA (TALLRec Sec. 3.2: LoRA on the attention projections).

`load_model` is the one loader of LLM weights; where it runs and in which dtype is `raylib.placement`'s rule."""

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


def weights_digest(name: str) -> str | None:
    """For a local model folder, sha1 (16 hex digits) of its config.json and of each weight file's name, size and
    modification time: weights saved again in place under the same folder name are another model (run
    fingerprints and the catalogue-embedding cache key on it). None for a hub id or the embedded model, whose
    name says which weights they are."""
    import hashlib

    path = Path(name).expanduser()
    if name == EMBEDDED_MODEL_NAME or not path.is_dir():
        return None
    digest = hashlib.sha1((path / "config.json").read_bytes() if (path / "config.json").is_file() else b"")
    for weights in sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf", ".json")
                          and p.name != "config.json"):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _hub_unreachable(timeout_s: float = 3.0) -> bool:
    """One quick connection attempt, so an offline machine learns in seconds, not after the hub client's
    retries (~30 s here)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return False
    except OSError:
        return True


def _not_found(name: str, why: str) -> RaylibError:
    return RaylibError(
        f"Model {name!r} could not be loaded ({why}): download it where there is network (`hf download {name}`), "
        "accept its licence and set HF_TOKEN if it is gated, or pass a local model folder as model.name.")


def check_model_available(config: ModelConfig) -> str:
    """Resolve `config.name` and make sure its config can be read, before any work starts; one line if not."""
    from transformers import AutoConfig

    path = resolve_model_path(config.name)
    if Path(path).exists():
        return path
    try:
        AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=config.trust_remote_code)
        return path  # in the Hugging Face cache
    except OSError:
        pass
    if _hub_unreachable():
        raise _not_found(path, "it is not in the Hugging Face cache and the hub cannot be reached")
    try:
        AutoConfig.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _not_found(path, f"missing or gated: {first}") from None
    return path


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


def load_model(config: ModelConfig, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
    """The base model on `device` (default: this process's, `placement.device`) in `dtype` (default: the dtype
    rule applied to `config.dtype`). A process given several GPUs (`inference.gpus: 2`) gets the layers spread
    over them (accelerate's `device_map="auto"`): a model too big for one card still scores."""
    from transformers import AutoModelForCausalLM

    from raylib.placement import choose_dtype, device as local_device, note_weights_loaded

    device = torch.device(device if device is not None else local_device())
    dtype = dtype or choose_dtype(config.dtype, device)
    note_weights_loaded(f"llm:{config.name}", device)
    sharded = device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(config.name), dtype=dtype, trust_remote_code=config.trust_remote_code,
        **({"device_map": "auto"} if sharded else {}))
    return model if sharded else model.to(device)


def load_with_adapter(config: ModelConfig, adapter_dir: str | Path | None, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None, merge: bool = True):
    """The base model plus a PEFT adapter (none: the base model alone). `merge`: folded into the weights, so the
    adapter costs nothing at inference (unmerged LoRA layers doubled the CPU scoring time here)."""
    model = load_model(config, device, dtype)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
        model = model.merge_and_unload() if merge else model
    return model


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


def add_lora(model, settings: LoraSettings, fp32_adapters: bool = False):
    """LoRA on `settings.target_modules`. The adapters stay in the base model's dtype: fp32 adapters on a bf16 model
    cost a cast per LoRA layer (~20% of a CPU step here), and DeepSpeed's ZeRO optimizer keeps fp32 master copies
    of them for the update anyway. `fp32_adapters`: in fp32 whatever the base (PEFT's autocast), for a module whose
    other trainable parts must stay fp32 (CoReLLa's joint stage): the trainer then runs DeepSpeed in fp32."""
    from peft import get_peft_model

    missing = [m for m in settings.target_modules if not any(n.endswith(m) for n, _ in model.named_modules())]
    if missing:
        raise RaylibError(f"lora.target_modules {missing} match no module of this model.")
    return get_peft_model(model, lora_config(settings), autocast_adapter_dtype=fp32_adapters)
