"""BIGRec job: `python -m jobs.bigrec [--config FILE] [section.field=value ...]`.

Tunes the model to write the next item's title, grounds it to the whole catalogue (plain, popularity- and
SASRec-re-weighted, gamma searched on validation with Ray Tune + Optuna) and reports NDCG@K / HR@K beside the
popularity and SASRec baselines. Runs locally or under `ray job submit --working-dir . -- python -m jobs.bigrec`.
"""

from __future__ import annotations

import sys

from jobs.cli import job_main
from raylib.methods.nextitem.config import BigrecJobConfig


def main(argv: list[str] | None = None) -> int:
    from raylib.methods.nextitem.pipeline import run_bigrec, summary_table

    return job_main(BigrecJobConfig, "jobs/configs/bigrec.yaml", argv,
                    lambda job: print("\n" + summary_table(run_bigrec(job))))


if __name__ == "__main__":
    sys.exit(main())
