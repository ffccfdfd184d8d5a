"""RecCocktail benchmark: `python -m jobs.bench_cocktail [--config FILE] [section.field=value ...]`, the same as `raylib bench cocktail`."""

from __future__ import annotations

import sys

from jobs.cli import run_entry


def main(argv: list[str] | None = None) -> int:
    return run_entry("bench", "cocktail", argv)


if __name__ == "__main__":
    sys.exit(main())
