"""TALLRec job: `python -m jobs.tallrec [--config FILE] [section.field=value ...]`.

Runs locally (starts Ray if none is running) or under `ray job submit --working-dir . -- python -m jobs.tallrec`.
"""

from __future__ import annotations

import sys

from jobs.cli import job_main
from raylib.methods.tallrec.config import TallrecJobConfig


def main(argv: list[str] | None = None) -> int:
    from raylib.methods.tallrec.pipeline import run_tallrec, summary_table

    return job_main(TallrecJobConfig, "jobs/configs/tallrec.yaml", argv,
                    lambda job: print("\n" + summary_table(run_tallrec(job))))


if __name__ == "__main__":
    sys.exit(main())
