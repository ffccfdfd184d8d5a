"""GPU memory planner: `python -m jobs.plan --model NAME --gpu rtx3090 [--zero 2|3] [--offload optimizer|params]
[--micro-batch N] [--seq-len N] [--grad-ckpt] [--gpus N] [--full] [--fp32] [--json]`.

Builds the model on the meta device from its config (the LLaMA-7B, Llama-2-7B and 13B configs ship with raylib,
so it runs offline), counts frozen and LoRA parameters, estimates per-GPU memory by part, says whether it fits
and names the cheapest change that does. Exit code 0 when it fits, 1 when not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from raylib import RaylibError


def main(argv: list[str] | None = None) -> int:
    from raylib.plan import GPUS, Setup, count_parameters, model_config, report, table

    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--model", required=True, help="llama-7b | llama-2-7b | llama-2-13b | HF id | folder")
    parser.add_argument("--gpu", default="rtx3090", choices=sorted(GPUS))
    parser.add_argument("--gpus", type=int, default=1, help="data-parallel GPUs (ZeRO partitions over them)")
    parser.add_argument("--zero", type=int, default=2, choices=(0, 1, 2, 3))
    parser.add_argument("--offload", action="append", default=[], choices=("optimizer", "params"))
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--grad-ckpt", action="store_true")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA (r=8 on q, v)")
    parser.add_argument("--fp32", action="store_true", help="fp32 weights and activations (default bf16)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = parser.parse_args(argv)
    try:
        if "params" in args.offload and args.zero != 3:
            raise RaylibError("--offload params needs --zero 3 (DeepSpeed offloads parameters only under ZeRO-3).")
        setup = Setup(gpu=args.gpu, gpus=args.gpus, zero=args.zero, offload_optimizer="optimizer" in args.offload,
                      offload_params="params" in args.offload, micro_batch=args.micro_batch, seq_len=args.seq_len,
                      grad_ckpt=args.grad_ckpt, dtype_bytes=4 if args.fp32 else 2,
                      trainable="full" if args.full else "lora")
        counts = count_parameters(model_config(args.model), trainable=setup.trainable)
        plan = report(counts, setup, args.model)
    except RaylibError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(plan, indent=1) if args.json else table(plan))
    return 0 if plan["fits"] else 1


if __name__ == "__main__":
    sys.exit(main())
