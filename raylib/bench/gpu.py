"""A GPU check for the first GPU we get: `raylib gpu-check`, writes reports/gpu.json.

A model shaped as the recipe's (Llama-2-7B's config shipped with raylib, random weights: no download; its vocabulary
is the tokenizer's) in a folder, the process capped at `memory_gb` of GPU memory
(`torch.cuda.set_per_process_memory_fraction`) to stand for an RTX 3090, and, with the recipe's settings:

  train         LoRA steps: the TALLRec task through Ray Train + DeepSpeed where both are installed (`trainer:
                ray`), else the same task in a plain PyTorch loop (AdamW on the LoRA weights, the recipe's
                micro-batch, accumulation, checkpointing and dtype; `trainer: plain`, and the report says so)
  scoring       TALLRec scoring (`raylib.evaluate.yes_probabilities`) at eval.batch_size, in eval.dtype
  beams         BIGRec beam search (`raylib.generation.beam_search`, 4 beams, 32 new tokens)
  serve_scorer  one Serve-style LLM scorer (`raylib.serving.scorers.LlmScorer`, the LLM deployment's model)

Each phase: peak GPU memory (allocated and reserved) beside the planner's estimate (`raylib.plan`), seconds
and tokens/s. `--dry-run`: a tiny LLaMA (2 layers) on whatever device there is, no cap: the test runs it.
Needs torch, transformers, peft, pyarrow, pyyaml and pydantic; not Ray, DeepSpeed, optuna or gguf.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raylib.assets import PROJECT_DIR

RECIPE = "jobs/configs/tallrec-llama7b-rtx3090.yaml"
GIB = 1024 ** 3


@dataclasses.dataclass
class GpuCheckSettings:
    recipe: str = RECIPE
    model_config: str = "llama-2-7b"   # a shipped config (raylib/model_configs) or "tiny"
    tokenizer: str | None = None       # a tokenizer folder (default: the embedded SmolLM2's)
    memory_gb: float = 24.0            # the cap standing for an RTX 3090 (0: no cap)
    steps: int = 3                     # optimizer steps to time
    records: int = 64                  # scoring / serve records
    queries: int = 16                  # beam-search queries
    trainer: str = "auto"              # auto | ray | plain
    work_dir: str = "runs/gpu_check"
    out: str = "reports/gpu.json"
    dry_run: bool = False


def _installed(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def _memory() -> dict[str, float | None]:
    if not torch.cuda.is_available():
        return {"peak_allocated_gib": None, "peak_reserved_gib": None}
    return {"peak_allocated_gib": torch.cuda.max_memory_allocated() / GIB,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB}


def _reset() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def model_folder(settings: GpuCheckSettings, tokenizer) -> tuple[Path, Any]:
    """A random-weight model of the configured shape, saved once (bf16 safetensors) with the tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    from raylib.plan import SHIPPED

    if settings.model_config == "tiny":
        config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=1024)
    else:
        config = AutoConfig.for_model(**json.loads((SHIPPED / f"{settings.model_config}.json").read_text()))
    config.vocab_size = len(tokenizer)
    config.pad_token_id, config.bos_token_id, config.eos_token_id = (
        tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    folder = Path(settings.work_dir).expanduser().resolve() / f"model-{settings.model_config}"
    if not (folder / "config.json").is_file():
        device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        del model
    return folder, config


def synthetic_records(n: int, seed: int = 0):
    """TALLRec-shaped records long enough to fill the recipe's prompts (titles are random catalogue-like names)."""
    from raylib.data.records import TallrecRecord
    from raylib.prompts import tallrec_input, tallrec_instruction

    rng = np.random.default_rng(seed)
    title = lambda: f"Film {int(rng.integers(10_000))} of the year ({int(rng.integers(1930, 2000))})"  # noqa: E731
    return [TallrecRecord(tallrec_instruction(), tallrec_input([title() for _ in range(8)],
                                                               [title() for _ in range(8)], title()),
                          "Yes." if k % 2 else "No.") for k in range(n)]


def train_phase(settings: GpuCheckSettings, job, records) -> dict[str, Any]:
    trainer = settings.trainer
    if trainer == "auto":
        trainer = "ray" if _installed("ray", "deepspeed") else "plain"
    _reset()
    start = time.perf_counter()
    if trainer == "ray":
        from raylib.methods.tallrec.task import TallrecTask
        from raylib.train.driver import train

        result = train(TallrecTask, job, [dataclasses.asdict(r) for r in records], [])
        seconds, tokens_per_s = time.perf_counter() - start, result.state.history[-1]["train_tokens_per_s"]
        memory = {"peak_allocated_gib": result.state.history[-1].get("peak_gpu_gib"), "peak_reserved_gib": None}
        note = "Ray Train + DeepSpeed ZeRO-%d, the TALLRec task" % job.train.zero_stage
    else:
        tokens, seconds = plain_steps(job, records, settings.steps)
        tokens_per_s, memory = tokens / seconds, _memory()
        note = ("plain PyTorch loop: Ray or DeepSpeed is not installed here; the TALLRec task's model, LoRA, "
                "micro-batch, accumulation, checkpointing and dtype, AdamW on the LoRA weights")
    return {"trainer": trainer, "note": note, "seconds": seconds, "tokens_per_s": tokens_per_s, **memory}


def plain_steps(job, records, steps: int) -> tuple[int, float]:
    """`steps` optimizer steps of the TALLRec task without Ray or DeepSpeed; (tokens, seconds) after a warm-up."""
    from raylib.placement import choose_dtype, device
    from raylib.methods.tallrec.task import TallrecTask
    from raylib.train.batching import batch_plan
    from raylib.train.task import WorkerContext

    here = device()
    task = TallrecTask(WorkerContext(job, 0, 1, here, choose_dtype(job.model.dtype, here)))
    module = task.build()
    items = task.encode([dataclasses.asdict(r) for r in records], "train")
    plan = batch_plan(job.train, len(items), 1)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=job.train.learning_rate)
    tokens, start = 0, None
    for step in range(steps + 1):  # step 0 warms up (kernels, allocator) and is not timed
        if step == 1:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start, tokens = time.perf_counter(), 0
        for k in range(plan.accumulation):
            lo = ((step * plan.accumulation + k) * plan.micro_batch) % max(1, len(items) - plan.micro_batch + 1)
            batch = {name: t.to(here) for name, t in task.collate(items[lo:lo + plan.micro_batch]).items()}
            (task.loss(module, batch) / plan.accumulation).backward()
            tokens += int(batch["attention_mask"].sum())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return tokens, time.perf_counter() - start


def _timed(fn) -> tuple[Any, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


def inference_phases(settings: GpuCheckSettings, job, records) -> dict[str, dict[str, Any]]:
    from raylib.encoding import answer_token_ids
    from raylib.evaluate import answer_probabilities, encode_all
    from raylib.generation import beam_search
    from raylib.model import load_tokenizer, load_with_adapter
    from raylib.placement import choose_dtype, device
    from raylib.prompts import bigrec_prompt
    from raylib.serving.scorers import LlmScorer

    here = device()
    tokenizer = load_tokenizer(job.model)
    out = {}
    _reset()
    model = load_with_adapter(job.model, None, here, choose_dtype(job.eval.dtype, here)).eval()
    encoded = encode_all(tokenizer, records, job.data.max_length)
    _, seconds = _timed(lambda: answer_probabilities(model, tokenizer, encoded, answer_token_ids(tokenizer),
                                                     job.eval.batch_size, progress=False))
    tokens = sum(len(e.input_ids) for e in encoded)
    out["scoring"] = {"seconds": seconds, "tokens_per_s": tokens / seconds, "batch": job.eval.batch_size, **_memory()}

    _reset()
    prompts = [bigrec_prompt([r.input[:60 * (1 + k % 4)]]) for k, r in enumerate(records[:settings.queries])]
    beams, seconds = _timed(lambda: beam_search(model, tokenizer, prompts, 4, 32, 8, progress=False))
    out["beams"] = {"seconds": seconds, "queries": len(prompts), "s_per_query": seconds / len(prompts),
                    "num_beams": 4, "batch": 8, "new_tokens": 32, **_memory()}
    del model

    _reset()
    scorer = LlmScorer(job.model.name, None, job.data.max_length, job.eval.dtype)
    samples = [{"title": f"Film {k}", "history_titles": [f"Film {k + i}" for i in range(10)],
                "history_ratings": [float(1 + (k + i) % 5) for i in range(10)]} for k in range(16)]
    _, seconds = _timed(lambda: scorer(samples))
    out["serve_scorer"] = {"seconds": seconds, "samples": len(samples), "batch": len(samples), **_memory()}
    return out


def planner_estimates(job, config) -> dict[str, float]:
    """The planner's totals (GiB) for the phases this check runs, with the same shapes."""
    from raylib.plan import Phase, count_parameters, estimate, inference_estimate, setup_for_job

    gpu = job.train.gpu or "rtx3090"
    eval_bytes = 4 if job.eval.dtype in ("fp32", "float32") else 2
    return {
        "train": estimate(count_parameters(config, job.lora), setup_for_job(job, gpu))["total"] / GIB,
        "scoring": inference_estimate(config, Phase("scoring", gpu, 1.0, eval_bytes, job.eval.batch_size,
                                                    job.data.max_length))["total"] / GIB,
        "beams": inference_estimate(config, Phase("beams", gpu, 1.0, eval_bytes, 8, job.data.max_length - 32, 4,
                                                  32))["total"] / GIB,
        "serve_scorer": inference_estimate(config, Phase("serve", gpu, 1.0, eval_bytes, 16,
                                                         job.data.max_length))["total"] / GIB,
    }


def run_check(settings: GpuCheckSettings) -> dict[str, Any]:
    from raylib.config import ModelConfig, load_config
    from raylib.methods.tallrec.config import TallrecJobConfig
    from raylib.model import load_tokenizer

    cuda = torch.cuda.is_available()
    if cuda and settings.memory_gb > 0:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, settings.memory_gb * GIB / total))
    tokenizer = load_tokenizer(ModelConfig(name=settings.tokenizer or "smollm2-135m"))
    folder, config = model_folder(settings, tokenizer)
    overrides = [f"model.name={folder}", f"output_dir={Path(settings.work_dir).resolve() / 'train'}",
                 f"train.max_steps={settings.steps}", "train.epochs=1", "train.fresh_start=true",
                 f"train.use_gpu={'true' if cuda else 'false'}"]
    if settings.dry_run:
        overrides += ["train.batch_size=4", "train.micro_batch_size=2", "data.max_length=256", "eval.batch_size=4",
                      "train.gpu=null"]
    job = load_config(TallrecJobConfig, PROJECT_DIR / settings.recipe, overrides)
    records = synthetic_records(max(settings.records, job.train.batch_size))
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if cuda else "cpu", "dry_run": settings.dry_run,
        "memory_cap_gib": settings.memory_gb if cuda and settings.memory_gb > 0 else None,
        "recipe": settings.recipe, "model_config": settings.model_config, "torch": torch.__version__,
        "planner_gib": planner_estimates(job, config), "phases": {}}
    report["phases"]["train"] = train_phase(settings, job, records[:job.train.batch_size * 2])
    _save(settings, report)
    report["phases"].update(inference_phases(settings, job, records[:settings.records]))
    for name, phase in report["phases"].items():
        phase["planner_gib"] = report["planner_gib"].get(name)
    _save(settings, report)
    return report


def _save(settings: GpuCheckSettings, report: dict[str, Any]) -> None:
    from raylib.bench.common import report_path, write_report

    write_report(report, report_path(settings.out))
