"""BIGRec / GenRec benchmark: `python -m jobs.bench_bigrec [--config FILE] [field=value ...]`.

Writes reports/bigrec_ml100k.json and reports/bigrec_ml100k.png. Rerunning the same command resumes: finished
training runs, generated beams and SASRec are reused from `output_dir`.
"""

from __future__ import annotations

import json
import sys

from jobs.cli import job_main
from raylib.bench.nextitem import BenchNextItemConfig


def main(argv: list[str] | None = None) -> int:
    from raylib.bench.nextitem import run_bench

    def run(config: BenchNextItemConfig) -> None:
        report = run_bench(config)
        keys = ("test_windows", "ndcg@10", "hr@10", "gamma", "grounding_ms_per_query", "catalogue_titles_per_s",
                "beam_batch_speedup", "wall_time_s", "report_path")
        print(json.dumps({k: report.get(k) for k in keys}, indent=1))

    return job_main(BenchNextItemConfig, "jobs/configs/bench_bigrec.yaml", argv, run)


if __name__ == "__main__":
    sys.exit(main())
