"""BIGRec / GenRec benchmark: `python -m jobs.bench_bigrec [--config FILE] [section.field=value ...]`, the same as `raylib bench bigrec`."""

from __future__ import annotations

import sys

from jobs.cli import run_entry


def main(argv: list[str] | None = None) -> int:
    return run_entry("bench", "bigrec", argv)


if __name__ == "__main__":
    sys.exit(main())
