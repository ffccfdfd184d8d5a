"""CoReLLa job: `python -m jobs.corella [--config FILE] [section.field=value ...]`.

Trains DCNv2 and the LLM in three stages (CRM warm-up; joint with the alignment loss; LLM only), tunes the
routing threshold on validation with Ray Tune + Optuna under the LLM-share budget, and reports AUC / LogLoss /
accuracy of the CRM, the LLM and the routed system. Artifacts for Ray Serve: `<output_dir>/artifacts/`.
Runs locally or under `ray job submit --working-dir . -- python -m jobs.corella`.
"""

from __future__ import annotations

import sys

from jobs.cli import job_main
from raylib.methods.corella.config import CorellaJobConfig


def main(argv: list[str] | None = None) -> int:
    from raylib.methods.corella.pipeline import run_corella, summary_table

    return job_main(CorellaJobConfig, "jobs/configs/corella.yaml", argv,
                    lambda job: print("\n" + summary_table(run_corella(job))))


if __name__ == "__main__":
    sys.exit(main())
