"""GenRec job: `python -m jobs.genrec [--config FILE] [section.field=value ...]`, the same as `raylib train genrec`."""

from __future__ import annotations

import sys

from jobs.cli import run_entry


def main(argv: list[str] | None = None) -> int:
    return run_entry("train", "genrec", argv)


if __name__ == "__main__":
    sys.exit(main())
