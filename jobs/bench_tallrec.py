"""TALLRec benchmark: `python -m jobs.bench_tallrec [--config FILE] [field=value ...]`.

Writes reports/tallrec_movie.json and reports/tallrec_movie.png (data: ../shared/data/tallrec/movie).
"""

from __future__ import annotations

import json
import sys

from jobs.cli import job_main
from raylib.bench.tallrec import BenchTallrecConfig


def main(argv: list[str] | None = None) -> int:
    from raylib.bench.tallrec import run_bench

    def run(config: BenchTallrecConfig) -> None:
        report = run_bench(config)
        keys = ("model", "test_records", "zero_shot_auc", "auc", "scoring_speedup", "scoring_auc_diff",
                "train_overhead", "wall_time_s")
        print(json.dumps({k: report.get(k) for k in keys}, indent=1))

    return job_main(BenchTallrecConfig, "jobs/configs/bench_tallrec.yaml", argv, run)


if __name__ == "__main__":
    sys.exit(main())
