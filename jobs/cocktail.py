"""RecCocktail job: `python -m jobs.cocktail [--config FILE] [section.field=value ...]`.

Trains the base-spirit LoRA on every domain (once) and the ingredient LoRA on the target domain, learns the
per-module mix by entropy minimisation on unlabelled target prompts, searches the mix on labelled validation
with Ray Tune + Optuna, folds each mix into ONE standard PEFT adapter (`<output_dir>/<target>/adapters/`) and
reports AUC on warm and cold-start test records. `target=book` afterwards reuses the base spirit.
Runs locally or under `ray job submit --working-dir . -- python -m jobs.cocktail`.
"""

from __future__ import annotations

import sys

from jobs.cli import job_main
from raylib.methods.cocktail.config import CocktailJobConfig


def main(argv: list[str] | None = None) -> int:
    from raylib.methods.cocktail.pipeline import run_cocktail, summary_table

    return job_main(CocktailJobConfig, "jobs/configs/cocktail.yaml", argv,
                    lambda job: print("\n" + summary_table(run_cocktail(job))))


if __name__ == "__main__":
    sys.exit(main())
