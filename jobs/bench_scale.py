"""Scale and reliability benchmark: `python -m jobs.bench_scale [--config FILE] [field=value ...]`.

The GPU recipes through the memory planner, the trainer's overhead over a bare PEFT loop (and where it goes),
the same TALLRec job on 1 and 2 Ray Train workers, a worker killed mid-epoch and a driver killed and rerun.
Writes reports/scale.json + reports/scale.png; rerunning keeps the sections already measured.
"""

from __future__ import annotations

import json
import sys

from jobs.cli import job_main
from raylib.bench.scale import BenchScaleConfig


def main(argv: list[str] | None = None) -> int:
    from raylib.bench.scale import run_bench

    def run(config: BenchScaleConfig) -> None:
        report = run_bench(config)
        shown = {k: report[k] for k in ("train_overhead", "workers_auc", "workers_speedup", "fault", "driver_fault")
                 if k in report}
        shown["fault"] = {k: v for k, v in shown.get("fault", {}).items() if "loss" not in k or k.endswith("diff")}
        print(json.dumps({"plan": report["plan"], **shown}, indent=1, default=str))

    return job_main(BenchScaleConfig, "jobs/configs/bench_scale.yaml", argv, run)


if __name__ == "__main__":
    sys.exit(main())
