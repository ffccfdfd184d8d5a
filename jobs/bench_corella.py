"""CoReLLa benchmark: `python -m jobs.bench_corella [--config FILE] [section.field=value ...]`, the same as `raylib bench corella`."""

from __future__ import annotations

import sys

from jobs.cli import run_entry


def main(argv: list[str] | None = None) -> int:
    return run_entry("bench", "corella", argv)


if __name__ == "__main__":
    sys.exit(main())
