"""TALLRec job: `python -m jobs.tallrec [--config FILE] [section.field=value ...]`, the same as
`raylib train tallrec`. Runs locally (starts Ray if none is running) or under `ray job submit --working-dir . -- python -m jobs.tallrec`."""

from __future__ import annotations

import sys

from jobs.cli import run_entry


def main(argv: list[str] | None = None) -> int:
    return run_entry("train", "tallrec", argv)


if __name__ == "__main__":
    sys.exit(main())
