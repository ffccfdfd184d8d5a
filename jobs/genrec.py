"""GenRec job: `python -m jobs.genrec [--config FILE] [section.field=value ...]`.

Tunes the model on paraphrased next-item instructions, generates 10 beams per test history and reports
NDCG@K / HR@K by exact title match (GenRec's protocol) and by grounding each beam to the catalogue.
"""

from __future__ import annotations

import sys

from jobs.cli import job_main
from raylib.methods.nextitem.config import GenrecJobConfig


def main(argv: list[str] | None = None) -> int:
    from raylib.methods.nextitem.pipeline import run_genrec, summary_table

    return job_main(GenrecJobConfig, "jobs/configs/genrec.yaml", argv,
                    lambda job: print("\n" + summary_table(run_genrec(job))))


if __name__ == "__main__":
    sys.exit(main())
