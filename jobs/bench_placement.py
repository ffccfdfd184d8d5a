"""Where CPU scoring runs: `python -m jobs.bench_placement [--config FILE] [field=value ...]`.

The same TALLRec scoring in the driver, in a Ray task holding every core and in a 1-CPU task.
Writes reports/placement.json + reports/placement.png.
"""

from __future__ import annotations

import json
import sys

from jobs.cli import job_main
from raylib.bench.placement import BenchPlacementConfig


def main(argv: list[str] | None = None) -> int:
    from raylib.bench.placement import run_bench

    def run(config: BenchPlacementConfig) -> None:
        report = run_bench(config)
        print(json.dumps({k: report[k] for k in ("best", "task_all_cores_vs_driver", "task_one_cpu_vs_driver",
                                                 "same_auc")}, indent=1))

    return job_main(BenchPlacementConfig, "jobs/configs/bench_placement.yaml", argv, run)


if __name__ == "__main__":
    sys.exit(main())
