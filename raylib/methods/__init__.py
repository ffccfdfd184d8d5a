"""The methods. Each package declares its `Method` (`raylib.methods.base`); this registry holds one line per
method, naming where that object lives. A method outside this package (a plugin, a test's) joins with
`register("module:ATTRIBUTE")`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raylib.methods.base import Method

REGISTRY: dict[str, str] = {
    "tallrec": "raylib.methods.tallrec:METHOD",
    "bigrec": "raylib.methods.nextitem:BIGREC",
    "genrec": "raylib.methods.nextitem:GENREC",
    "corella": "raylib.methods.corella:METHOD",
    "cocktail": "raylib.methods.cocktail:METHOD",
}


def methods() -> dict[str, "Method"]:
    """Every registered method, by name, in registry order."""
    from raylib.methods.base import load

    return {name: load(target) for name, target in REGISTRY.items()}


def method(name: str) -> "Method":
    from raylib import RaylibError

    found = methods()
    if name not in found:
        raise RaylibError(f"No method {name!r}: the methods are {', '.join(found)}.")
    return found[name]


def register(target: str) -> "Method":
    """Add the `Method` at "module:ATTRIBUTE" to the registry (under its own name) and return it."""
    from raylib.methods.base import load

    found = load(target)
    REGISTRY[found.name] = target
    return found
