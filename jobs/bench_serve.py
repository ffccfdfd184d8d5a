"""Load benchmark of the CoReLLa Serve app: `python -m jobs.bench_serve [--config FILE] [field=value ...]`.

Needs CoReLLa artifacts (default: the benchmark's, `python -m jobs.bench_corella`). Deploys the app on a local
Ray, drives it over HTTP with N concurrent connections (router vs LLM-only, one LLM replica killed mid-run, a
burst), and writes reports/serve.json + reports/serve.png. Rerunning resumes from `output_dir/phases/`.
"""

from __future__ import annotations

import json
import sys

from jobs.cli import job_main
from raylib.bench.serve import BenchServeConfig


def main(argv: list[str] | None = None) -> int:
    from raylib.bench.serve import headline, run_bench

    def run(config: BenchServeConfig) -> None:
        print(json.dumps(headline(run_bench(config)), indent=1))

    return job_main(BenchServeConfig, "jobs/configs/bench_serve.yaml", argv, run)


if __name__ == "__main__":
    sys.exit(main())
