"""GPU memory planner, training and inference:

    python -m jobs.plan --config jobs/configs/tallrec-llama7b-rtx3090.yaml [--job tallrec] [field=value ...]
    python -m jobs.plan --model NAME --gpu rtx3090 [--zero 2|3] [--offload optimizer|params] [--micro-batch N]
        [--seq-len N] [--grad-ckpt] [--gpus N] [--full] [--fp32] [--eval-batch N] [--beams N] [--json]

With `--config`, a job's config (plus overrides) as the job would run it on `train.gpu`: the training plan and
every inference phase the job runs (scoring, beams, embeddings, routed scoring, a Serve replica). With
`--model`, a training setup from flags plus a scoring phase (and a beam-search phase with `--beams`). Models
build on the meta device from their config (the LLaMA-7B, Llama-2-7B and 13B configs ship with raylib, so it
runs offline). Says whether each part fits and names the cheapest change that does. Exit code 0 when everything
fits, 1 when not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from raylib import RaylibError

def job_class(name: str, values: dict) -> type:
    """The config class of the registered method `name` (`raylib.methods`); "auto" reads the method from the
    config's sections."""
    from raylib.methods import method

    if name == "auto":
        name = _method_of_sections(set(values))
    return method(name).config_class()


def _method_of_sections(keys: set[str]) -> str:
    """The shipped methods by the sections only their configs have (a config for another method: `--job`)."""
    return ("corella" if keys & {"routing", "crm", "align", "stages"} else
            "cocktail" if keys & {"domains", "merge", "target"} else
            "genrec" if "num_templates" in keys else
            "bigrec" if keys & {"generation", "grounding", "sasrec", "baselines"} else "tallrec")


def plan_config(args) -> dict:
    import yaml

    from raylib.config import load_config
    from raylib.plan import count_parameters, inference_phases, inference_report, model_config, report, \
        setup_for_job

    with open(args.config, encoding="utf-8") as handle:
        values = yaml.safe_load(handle) or {}
    job = load_config(job_class(args.job, values), args.config, args.overrides)
    gpu = job.train.gpu or args.gpu
    config = model_config(job.model.name)
    plan = report(count_parameters(config, job.lora), setup_for_job(job, gpu), job.model.name)
    plan["inference"] = [inference_report(config, p) for p in inference_phases(job, gpu)]
    return plan


def plan_flags(args) -> dict:
    from raylib.plan import Phase, Setup, count_parameters, inference_report, model_config, report

    if "params" in args.offload and args.zero != 3:
        raise RaylibError("--offload params needs --zero 3 (DeepSpeed offloads parameters only under ZeRO-3).")
    setup = Setup(gpu=args.gpu, gpus=args.gpus, zero=args.zero, offload_optimizer="optimizer" in args.offload,
                  offload_params="params" in args.offload, micro_batch=args.micro_batch, seq_len=args.seq_len,
                  grad_ckpt=args.grad_ckpt, dtype_bytes=4 if args.fp32 else 2,
                  trainable="full" if args.full else "lora")
    config = model_config(args.model)
    plan = report(count_parameters(config, trainable=setup.trainable), setup, args.model)
    knobs = (("batch", "--eval-batch"), ("dtype", "--fp32 off: bf16"))
    phases = [Phase("scoring", args.gpu, 1.0, setup.dtype_bytes, args.eval_batch, args.seq_len, knobs=knobs)]
    if args.beams > 1:
        phases.append(Phase("beams", args.gpu, 1.0, setup.dtype_bytes, args.eval_batch, args.seq_len, args.beams, 32,
                            knobs=knobs + (("beams", "--beams"),)))
    plan["inference"] = [inference_report(config, p) for p in phases]
    return plan


def main(argv: list[str] | None = None) -> int:
    from raylib.plan import GPUS, job_table

    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--config", help="a job's YAML config: plan it as the job runs it")
    parser.add_argument("--job", default="auto", help="the method the config is for (raylib list), or auto")
    parser.add_argument("--model", help="llama-7b | llama-2-7b | llama-2-13b | HF id | folder")
    parser.add_argument("--gpu", default="rtx3090", choices=sorted(GPUS))
    parser.add_argument("--gpus", type=int, default=1, help="data-parallel GPUs (ZeRO partitions over them)")
    parser.add_argument("--zero", type=int, default=2, choices=(0, 1, 2, 3))
    parser.add_argument("--offload", action="append", default=[], choices=("optimizer", "params"))
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--grad-ckpt", action="store_true")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA (r=8 on q, v)")
    parser.add_argument("--fp32", action="store_true", help="fp32 weights and activations (default bf16)")
    parser.add_argument("--eval-batch", type=int, default=16, help="scoring / beam-search batch")
    parser.add_argument("--beams", type=int, default=0, help="also plan beam search with this many beams")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("overrides", nargs="*", help="with --config: section.field=value overrides")
    args = parser.parse_args(argv)
    try:
        if bool(args.config) == bool(args.model):
            raise RaylibError("Give either --config (a job's YAML) or --model (a training setup from flags).")
        plan = plan_config(args) if args.config else plan_flags(args)
    except RaylibError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(plan, indent=1) if args.json else job_table(plan))
    return 0 if plan["fits"] and all(p["fits"] for p in plan["inference"]) else 1


if __name__ == "__main__":
    sys.exit(main())
