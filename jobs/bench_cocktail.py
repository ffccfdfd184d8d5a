"""RecCocktail benchmark: `python -m jobs.bench_cocktail [--config FILE] [section.field=value ...]`.

Writes reports/cocktail.json and reports/cocktail.png: AUC of the raw model, base spirit, ingredient, 0.5/0.5
average, entropy-learned and Tune-searched mixes on warm and cold-start test records, and the inference time of
the folded adapter against one adapter. Rerunning the same command resumes from `output_dir`.
"""

from __future__ import annotations

import json
import sys

from jobs.cli import job_main
from raylib.bench.cocktail import BenchCocktailConfig


def main(argv: list[str] | None = None) -> int:
    from raylib.bench.cocktail import run_bench

    def run(config: BenchCocktailConfig) -> None:
        out = run_bench(config)
        keys = ("target_domain", "warm", "cold", "merged_time_ratio", "wall_time_s", "report_path")
        print(json.dumps({k: out[k] for k in keys}, indent=1))

    return job_main(BenchCocktailConfig, "jobs/configs/bench_cocktail.yaml", argv, run)


if __name__ == "__main__":
    sys.exit(main())
