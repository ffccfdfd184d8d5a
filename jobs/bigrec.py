"""BIGRec job: `python -m jobs.bigrec [--config FILE] [section.field=value ...]`, the same as `raylib train bigrec`."""

from __future__ import annotations

import sys

from jobs.cli import run_entry


def main(argv: list[str] | None = None) -> int:
    return run_entry("train", "bigrec", argv)


if __name__ == "__main__":
    sys.exit(main())
