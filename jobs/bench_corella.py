"""CoReLLa benchmark: `python -m jobs.bench_corella [--config FILE] [section.field=value ...]`.

Writes reports/corella_ml100k.json and two PNGs (routed AUC vs LLM share; AUC per CRM-confidence group).
Rerunning the same command resumes: finished stages, scores and threshold studies are reused from `output_dir`.
"""

from __future__ import annotations

import json
import sys

from jobs.cli import job_main
from raylib.bench.corella import BenchCorellaConfig


def main(argv: list[str] | None = None) -> int:
    from raylib.bench.corella import run_bench

    def run(config: BenchCorellaConfig) -> None:
        summary = run_bench(config)
        keys = ("test_samples", "auc", "logloss", "acc", "llm_share", "threshold", "cost_ratio", "wall_time_s",
                "report_path")
        print(json.dumps({k: summary.get(k) for k in keys}, indent=1))

    return job_main(BenchCorellaConfig, "jobs/configs/bench_corella.yaml", argv, run)


if __name__ == "__main__":
    sys.exit(main())
