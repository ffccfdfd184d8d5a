"""GPU memory planner for LoRA (or full) fine-tuning under DeepSpeed ZeRO, and for the inference steps after it:
does a job fit its GPUs in every phase?

The model is built on PyTorch's meta device from its config (no weights are read or allocated); LoRA is added
with PEFT the way training adds it, so the parameter counts are exact. Per GPU, in bytes:

  weights       frozen params x dtype bytes            (ZeRO-3: / GPUs; offloaded: two layers in flight)
  lora          trainable params x dtype bytes          (ZeRO-3: / GPUs; offloaded: in flight only)
  grads         trainable x dtype bytes                 (ZeRO-2/3: / GPUs; with the optimizer offloaded: 0)
  optimizer     trainable x (4 master + 8 Adam) in bf16/fp16, 8 in fp32   (ZeRO-1+: / GPUs; offloaded: 0)
  activations   tokens x layers x (10 h + 4 i) x act bytes: the block tensors autograd keeps (RMSNorm
                inputs and outputs, q/k/v, attention output, o_proj input, the SwiGLU's gate/up/act/product),
                with SDPA attention (no seq^2 scores). Gradient checkpointing keeps the layer inputs only
                (tokens x layers x h) plus one layer recomputed.
  logits        tokens x vocab x (dtype + 4 + 4): the logits, their fp32 copy for the loss, its gradient
  buffers       DeepSpeed's: ZeRO-3 prefetch bucket (5e7 elements x 2) and, for ZeRO-2, reduce buckets
                (min(5e8, trainable) x 4); plus ~0.8 GiB CUDA context and 10% allocator slack on the rest.

Inference phases (`inference_estimate`; no gradients, one layer's activations alive at a time), per GPU:

  weights       all params x dtype bytes (the adapter merged)   (over `inference.gpus` GPUs: / GPUs)
  kv_cache      batch x beams x (prompt + new tokens) x layers x 2 x kv_heads x head_dim x dtype bytes
  activations   batch x beams x tokens x (4 h + 3 i) x dtype bytes: one decoder layer's q/k/v/o and SwiGLU
  logits        rows x vocab x (dtype + 4 + 4) for the last position of each row (beams: + their scores)
  context_and_slack  as for training

Phases of a job: TALLRec / RecCocktail scoring (`eval`), BIGRec / GenRec beams and grounding embeddings
(`generation`, `grounding`), CoReLLa routed scoring and its Serve LLM replica (`routing`).

It is an estimate (what autograd keeps depends on kernels); it errs high. `raylib plan` prints it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

from raylib import RaylibError
from raylib.config import GPU_MEMORY_GIB

GIB = 1024 ** 3
GPUS = GPU_MEMORY_GIB  # GiB of device memory, per card name
SHIPPED = Path(__file__).parent / "model_configs"
ALIASES = {"huggyllama/llama-7b": "llama-7b", "meta-llama/Llama-2-7b-hf": "llama-2-7b",
           "meta-llama/Llama-2-13b-hf": "llama-2-13b"}
CUDA_CONTEXT_GIB = 0.8
USABLE = 0.97  # of the device's memory; the rest is what the driver and other processes keep


@dataclasses.dataclass(frozen=True)
class Setup:
    gpu: str = "rtx3090"
    gpus: int = 1
    zero: int = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    micro_batch: int = 4
    seq_len: int = 512
    grad_ckpt: bool = False
    dtype_bytes: int = 2           # bf16 / fp16 weights and activations; 4 for fp32
    trainable: str = "lora"        # or "full"

    def describe(self) -> str:
        offload = "+".join(k for k, on in (("optimizer", self.offload_optimizer), ("params", self.offload_params))
                           if on) or "none"
        return (f"{self.gpu} x{self.gpus}, ZeRO-{self.zero}, offload {offload}, micro-batch {self.micro_batch}, "
                f"seq {self.seq_len}, checkpointing {'on' if self.grad_ckpt else 'off'}")


@dataclasses.dataclass
class Counts:
    frozen: int
    trainable: int
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    largest_layer: int  # params of one decoder layer (what ZeRO-3 offload keeps in flight, x2)


@functools.lru_cache(maxsize=8)
def model_config(name: str):
    """A transformers config: the shipped LLaMA configs by name or hub id (offline), else a folder or hub id
    (an unknown one is one line, at once: `raylib.model.check_model_available`)."""
    from transformers import AutoConfig

    key = ALIASES.get(name, name)
    if (SHIPPED / f"{key}.json").is_file():
        return AutoConfig.for_model(**json.loads((SHIPPED / f"{key}.json").read_text()))
    from raylib.config import ModelConfig
    from raylib.model import check_model_available

    try:
        path = check_model_available(ModelConfig(name=name))
        return AutoConfig.from_pretrained(path)
    except RaylibError as err:
        raise RaylibError(f"{err} (The planner also knows, offline: "
                          f"{', '.join(sorted(p.stem for p in SHIPPED.glob('*.json')))}.)") from None
    except (OSError, ValueError) as err:
        raise RaylibError(f"No config for model {name!r}: {str(err).strip().splitlines()[0]}") from None


def count_parameters(config, lora=None, trainable: str = "lora") -> Counts:
    """Exact counts from the model built on the meta device (+ PEFT's LoRA, as training adds it)."""
    from raylib.config import LoraSettings

    lora = lora or LoraSettings()
    return _count(config.to_json_string(), lora.r, lora.alpha, tuple(lora.target_modules), trainable)


@functools.lru_cache(maxsize=16)
def _count(config_json: str, r: int, alpha: int, targets: tuple[str, ...], trainable: str) -> Counts:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**json.loads(config_json))

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layer = sum(p.numel() for p in model.model.layers[0].parameters())
    if trainable == "full":
        total = sum(p.numel() for p in model.parameters())
        frozen, train = 0, total
    else:
        from peft import get_peft_model

        from raylib.config import LoraSettings
        from raylib.model import lora_config

        peft_model = get_peft_model(model, lora_config(LoraSettings(r=r, alpha=alpha, target_modules=list(targets))))
        train = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in peft_model.parameters() if not p.requires_grad)
    return Counts(frozen, train, config.num_hidden_layers, config.hidden_size, config.intermediate_size,
                  config.vocab_size, layer)


def estimate(counts: Counts, setup: Setup) -> dict[str, float]:
    """Per-GPU bytes by part (see the module doc), and the total."""
    n, b = max(1, setup.gpus), setup.dtype_bytes
    c = counts
    if setup.offload_params:
        weights = 2 * c.largest_layer * b
    else:
        weights = c.frozen * b / (n if setup.zero == 3 else 1)
    # offloaded params: trainable ones travel like the frozen (in flight only); an offloaded optimizer steps on
    # the CPU, so ZeRO-2/3 keep the gradients there too
    lora = 0.0 if setup.offload_params else c.trainable * b / (n if setup.zero == 3 else 1)
    grads = 0.0 if setup.offload_optimizer and setup.zero >= 2 else \
        c.trainable * b / (n if setup.zero >= 2 else 1)
    optimizer = 0.0 if setup.offload_optimizer else \
        c.trainable * (12 if b < 4 else 8) / (n if setup.zero >= 1 else 1)
    tokens = setup.micro_batch * setup.seq_len
    per_layer = (10 * c.hidden + 4 * c.intermediate) * b
    if setup.grad_ckpt:
        activations = tokens * (c.layers * c.hidden * b + per_layer)
    else:
        activations = tokens * c.layers * per_layer
    logits = tokens * c.vocab * (b + 4 + 4)
    buffers = 5e7 * 2 if setup.zero == 3 else min(5e8, c.trainable) * 4 if setup.zero == 2 else 0.0
    parts = {"weights": weights, "lora" if setup.trainable == "lora" else "trainable": lora, "grads": grads,
             "optimizer": optimizer, "activations": activations, "logits": logits, "buffers": buffers}
    subtotal = sum(parts.values())
    parts["context_and_slack"] = CUDA_CONTEXT_GIB * GIB + 0.10 * subtotal
    parts["total"] = subtotal + parts["context_and_slack"]
    return parts


def capacity(setup: Setup) -> float:
    if setup.gpu not in GPUS:
        raise RaylibError(f"Unknown GPU {setup.gpu!r}: one of {sorted(GPUS)}.")
    return GPUS[setup.gpu] * GIB * USABLE


def fits(counts: Counts, setup: Setup) -> bool:
    return estimate(counts, setup)["total"] <= capacity(setup)


def cheapest_fix(counts: Counts, setup: Setup) -> tuple[Setup, str] | None:
    """The first setup that fits, changing things in order of what they cost in speed: gradient checkpointing,
    a smaller micro-batch (the global batch stays, by accumulation), ZeRO-3 across several GPUs, optimizer
    offload, parameter offload. Returns (setup, the config overrides that give it) or None."""
    steps: list[tuple[str, dict[str, Any]]] = [("train.gradient_checkpointing=true", {"grad_ckpt": True})]
    mb = setup.micro_batch
    while mb > 1:
        mb //= 2
        steps.append((f"train.micro_batch_size={mb}", {"micro_batch": mb}))
    if setup.gpus > 1:
        steps.append(("train.zero_stage=3", {"zero": 3}))
    steps.append(("train.offload_optimizer=true", {"offload_optimizer": True, "zero": max(setup.zero, 1)}))
    steps.append(("train.zero_stage=3 train.offload_params=true", {"offload_params": True, "zero": 3}))
    current, changes = setup, []
    for text, change in steps:
        if fits(counts, current):
            break
        current = dataclasses.replace(current, **change)
        if text.startswith("train.micro_batch_size"):
            changes = [c for c in changes if not c.startswith("train.micro_batch_size")]
        changes.append(text)
    if not fits(counts, current):
        return None
    return current, " ".join(changes)


def report(counts: Counts, setup: Setup, model: str) -> dict[str, Any]:
    parts = estimate(counts, setup)
    out = {"model": model, "setup": dataclasses.asdict(setup), "frozen_params": counts.frozen,
           "trainable_params": counts.trainable, "gib": {k: v / GIB for k, v in parts.items()},
           "capacity_gib": capacity(setup) / GIB, "fits": parts["total"] <= capacity(setup)}
    if not out["fits"]:
        fix = cheapest_fix(counts, setup)
        out["fix"] = None if fix is None else {"overrides": fix[1], "setup": dataclasses.asdict(fix[0]),
                                               "total_gib": estimate(counts, fix[0])["total"] / GIB}
    return out


def table(plan: dict[str, Any]) -> str:
    s = plan["setup"]
    head = (f"{plan['model']}: {plan['frozen_params'] / 1e9:.2f}B frozen, {plan['trainable_params'] / 1e6:.2f}M "
            f"trainable; {Setup(**s).describe()}")
    return _parts_table(head, plan, "  ", "nothing fits on this GPU: more GPUs (train.num_workers) with ZeRO-3, "
                                          "or a bigger GPU")


def _parts_table(head: str, plan: dict[str, Any], indent: str, nothing_fits: str) -> str:
    """A plan's parts in GiB, its total against the usable memory, and the cheapest fix when it does not fit."""
    lines = [head] + [f"{indent}{k:<18}{v:>8.2f} GiB" for k, v in plan["gib"].items() if k != "total"]
    lines.append(f"{indent}{'total':<18}{plan['gib']['total']:>8.2f} GiB of {plan['capacity_gib']:.1f} usable: "
                 f"{'FITS' if plan['fits'] else 'DOES NOT FIT'}")
    if not plan["fits"]:
        fix = plan.get("fix")
        lines.append(f"{indent}cheapest change that fits: {fix['overrides']} ({fix['total_gib']:.2f} GiB)" if fix
                     else f"{indent}{nothing_fits}")
    return "\n".join(lines)


def setup_for_job(job, gpu: str) -> Setup:
    """The planner's view of a training job's config (what its GPU workers would run)."""
    t = job.train
    dtype_bytes = 4 if job.model.dtype == "fp32" else 2
    seq = getattr(getattr(job, "data", None), "max_length", None) or getattr(job, "max_length", 512)
    return Setup(gpu=gpu, gpus=t.num_workers, zero=t.zero_stage, offload_optimizer=t.offload_optimizer,
                 offload_params=t.offload_params, micro_batch=t.micro_batch_size, seq_len=seq,
                 grad_ckpt=t.gradient_checkpointing, dtype_bytes=dtype_bytes)


# ------------------------------------------------------------------ inference phases
@dataclasses.dataclass(frozen=True)
class Phase:
    """One inference step of a job as one task or replica holds it (`raylib.placement`)."""
    name: str
    gpu: str = "rtx3090"
    gpus: float = 1.0            # inference.gpus: a fraction shares one GPU; 2+ shard the weights over them
    dtype_bytes: int = 2
    batch: int = 16
    prompt: int = 512            # prompt tokens per row
    beams: int = 1
    new_tokens: int = 0
    logits: bool = True          # embeddings stop at the last hidden state
    knobs: tuple[tuple[str, str], ...] = ()  # what -> the config field that sets it ("batch", "dtype", "beams")

    def describe(self) -> str:
        beams = f", {self.beams} beams x {self.new_tokens} new tokens" if self.beams > 1 else ""
        share = f"{self.gpus:g} of a {self.gpu}" if self.gpus < 1 else f"{self.gpu} x{self.gpus:g}"
        return (f"{self.name}: {share}, {'fp32' if self.dtype_bytes == 4 else 'bf16/fp16'}, batch {self.batch}, "
                f"prompt {self.prompt}{beams}")


def inference_estimate(config, phase: Phase) -> dict[str, float]:
    """Per-GPU bytes of one inference phase by part (see the module doc), and the total."""
    b = phase.dtype_bytes
    shards = max(1.0, phase.gpus)
    params = _total_params(config.to_json_string())
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rows = phase.batch * phase.beams
    tokens = phase.prompt + phase.new_tokens
    parts = {
        "weights": params * b / shards,
        "kv_cache": rows * tokens * config.num_hidden_layers * 2 * kv_heads * head_dim * b / shards,
        "activations": rows * (phase.prompt if phase.beams == 1 else tokens)
        * (4 * config.hidden_size + 3 * config.intermediate_size) * b,
        "logits": rows * config.vocab_size * (b + 4 + (4 if phase.beams > 1 else 0)) if phase.logits else 0.0,
    }
    subtotal = sum(parts.values())
    parts["context_and_slack"] = CUDA_CONTEXT_GIB * GIB + 0.10 * subtotal
    parts["total"] = subtotal + parts["context_and_slack"]
    return parts


@functools.lru_cache(maxsize=16)
def _total_params(config_json: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**json.loads(config_json)))
    return sum(p.numel() for p in model.parameters())


def phase_capacity(phase: Phase) -> float:
    if phase.gpu not in GPUS:
        raise RaylibError(f"Unknown GPU {phase.gpu!r}: one of {sorted(GPUS)}.")
    return GPUS[phase.gpu] * GIB * USABLE * min(1.0, phase.gpus)


def phase_fits(config, phase: Phase) -> bool:
    return inference_estimate(config, phase)["total"] <= phase_capacity(phase)


def cheapest_inference_fix(config, phase: Phase) -> tuple[Phase, str] | None:
    """The first change that fits, in this order of preference: a smaller batch (same results, slower), bf16
    (fast on GPUs; results move a little), both, fewer beams (other results), the weights over more GPUs."""
    knobs = dict(phase.knobs)
    batches = [phase.batch]
    while batches[-1] > 1:
        batches.append(batches[-1] // 2)
    dtypes = [phase.dtype_bytes] + ([2] if phase.dtype_bytes == 4 and "dtype" in knobs else [])
    beams = [phase.beams] + ([n for n in (4, 2, 1) if n < phase.beams] if "beams" in knobs else [])
    gpus = [phase.gpus] + ([2.0, 4.0, 8.0] if phase.gpus >= 1 else [1.0])
    for n_gpus in gpus:
        for n_beams in beams:
            for dtype_bytes in dtypes:
                for batch in batches:
                    if "batch" not in knobs and batch != phase.batch:
                        continue
                    candidate = dataclasses.replace(phase, batch=batch, dtype_bytes=dtype_bytes, beams=n_beams,
                                                    gpus=n_gpus)
                    if phase_fits(config, candidate):
                        changes = [f"{knobs['batch']}={batch}" if batch != phase.batch else "",
                                   f"{knobs['dtype']}=bf16" if dtype_bytes != phase.dtype_bytes else "",
                                   f"{knobs['beams']}={n_beams}" if n_beams != phase.beams else "",
                                   f"inference.gpus={n_gpus:g}" if n_gpus != phase.gpus else ""]
                        return candidate, " ".join(c for c in changes if c)
    return None


def inference_report(config, phase: Phase) -> dict[str, Any]:
    parts = inference_estimate(config, phase)
    out = {"phase": phase.name, "setup": dataclasses.asdict(phase), "description": phase.describe(),
           "gib": {k: v / GIB for k, v in parts.items()}, "capacity_gib": phase_capacity(phase) / GIB,
           "fits": parts["total"] <= phase_capacity(phase)}
    if not out["fits"]:
        fix = cheapest_inference_fix(config, phase)
        out["fix"] = None if fix is None else {"overrides": fix[1],
                                               "total_gib": inference_estimate(config, fix[0])["total"] / GIB}
    return out


def inference_table(plan: dict[str, Any]) -> str:
    return _parts_table(f"  {plan['description']}", plan, "    ", "nothing fits: a bigger GPU")


def _bytes_of(dtype: str) -> int:
    """The dtype rule on a GPU: "auto" is bf16 (or fp16), 2 bytes; fp32 is 4."""
    return 4 if dtype in ("fp32", "float32") else 2


def inference_phases(job, gpu: str) -> list[Phase]:
    """The inference phases a job runs on `gpu`, read from the sections it has (see the module doc)."""
    gpus = job.inference.gpus
    phases = []
    eval_cfg = getattr(job, "eval", None)
    if eval_cfg is not None:
        phases.append(Phase("scoring", gpu, gpus, _bytes_of(eval_cfg.dtype), eval_cfg.batch_size,
                            job.data.max_length, knobs=(("batch", "eval.batch_size"), ("dtype", "eval.dtype"))))
    generation = getattr(job, "generation", None)
    if generation is not None:
        phases.append(Phase("beams", gpu, gpus, _bytes_of(generation.dtype), generation.batch_size,
                            job.data.max_length - generation.max_new_tokens, generation.num_beams,
                            generation.max_new_tokens, knobs=(("batch", "generation.batch_size"),
                                                              ("dtype", "generation.dtype"),
                                                              ("beams", "generation.num_beams"))))
        phases.append(Phase("embeddings", gpu, gpus, _bytes_of(generation.dtype), job.grounding.batch_size, 64,
                            logits=False, knobs=(("batch", "grounding.batch_size"), ("dtype", "generation.dtype"))))
    routing = getattr(job, "routing", None)
    if routing is not None:
        phases.append(Phase("routed scoring", gpu, gpus, _bytes_of(job.model.dtype), routing.batch_size,
                            job.data.max_length, knobs=(("batch", "routing.batch_size"), ("dtype", "model.dtype"))))
        phases.append(Phase("serve LLM replica", gpu, 1.0, _bytes_of(job.model.dtype), 16, job.data.max_length,
                            knobs=(("dtype", "model.dtype"),)))
    return phases


def check_job_fits(job) -> dict[str, Any] | None:
    """Before a GPU job starts: its training plan and its inference phases on `train.gpu`; a RaylibError with the
    tables and the cheapest change when any phase cannot fit. Jobs on CPU, or with no `train.gpu`, are not
    planned (None). Whole small models (SASRec, DCNv2: `plans_llm_memory = False` tasks) are not planned."""
    gpu = getattr(job.train, "gpu", None)
    if not job.train.use_gpu or not gpu:
        return None
    config = model_config(job.model.name)
    plan = report(count_parameters(config, job.lora), setup_for_job(job, gpu), job.model.name)
    plan["inference"] = [inference_report(config, phase) for phase in inference_phases(job, gpu)]
    failing = [p for p in plan["inference"] if not p["fits"]]
    if not plan["fits"] or failing:
        tables = [table(plan)] if not plan["fits"] else []
        tables += [inference_table(p) for p in failing]
        what = "training" if not plan["fits"] else ", ".join(p["phase"] for p in failing)
        raise RaylibError(f"This GPU config does not fit {gpu} ({what}; checked before any training):\n"
                          + "\n".join(tables))
    return plan


def job_table(plan: dict[str, Any]) -> str:
    """A job's plan: the training table, then each inference phase."""
    return "\n".join([table(plan), "inference:"] + [inference_table(p) for p in plan.get("inference", [])])
