"""GPU check: `python -m jobs.gpu_check [--dry-run] [--memory-gb 24] [--steps 3] [--trainer auto|ray|plain]
[--tokenizer DIR] [--out reports/gpu.json]`.

A Llama-2-7B-shaped model with random weights (no download), capped at 24 GB to stand for an RTX 3090: LoRA
training steps with the 3090 recipe, TALLRec scoring, BIGRec beams, a Serve-style LLM scorer; each phase's peak
memory beside the planner's estimate, and tokens/s, in reports/gpu.json. `--dry-run`: a tiny model on this
machine (the test runs it). Needs torch, transformers, peft, pyarrow, pyyaml, pydantic; not Ray or DeepSpeed.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from raylib import RaylibError
    from raylib.bench.gpu import GpuCheckSettings, run_check

    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="a tiny model, no memory cap")
    parser.add_argument("--memory-gb", type=float, default=24.0, help="cap the process's GPU memory (0: none)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--trainer", default="auto", choices=("auto", "ray", "plain"))
    parser.add_argument("--tokenizer", help="a tokenizer folder (default: the embedded SmolLM2's)")
    parser.add_argument("--work-dir", default="runs/gpu_check")
    parser.add_argument("--out", default="reports/gpu.json")
    args = parser.parse_args(argv)
    from raylib.runtime import set_verbose

    set_verbose(False)
    settings = GpuCheckSettings(model_config="tiny" if args.dry_run else "llama-2-7b", tokenizer=args.tokenizer,
                                memory_gb=0.0 if args.dry_run else args.memory_gb, steps=args.steps,
                                trainer=args.trainer, work_dir=args.work_dir, out=args.out, dry_run=args.dry_run,
                                records=16 if args.dry_run else 64, queries=4 if args.dry_run else 16)
    try:
        report = run_check(settings)
    except RaylibError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({name: {k: v for k, v in phase.items() if k != "note"}
                      for name, phase in report["phases"].items()}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
