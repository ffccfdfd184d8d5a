"""The house: infrastructure <- methods <- serving, bench; nothing imports bench; no circles (imports inside
functions count too). RecCocktail builds on TALLRec (its stages are TALLRec jobs on TALLRec records): the one
method that imports another."""

from __future__ import annotations

import ast
from pathlib import Path

RAYLIB = Path(__file__).resolve().parents[1] / "raylib"
LAYERS = {"infra": 0, "methods": 1, "serving": 2, "bench": 3}
METHOD_DEPENDENCIES = {("cocktail", "tallrec")}


def modules() -> dict[str, Path]:
    out = {}
    for path in RAYLIB.rglob("*.py"):
        parts = path.relative_to(RAYLIB.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("raylib"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("raylib")}
    return found & known


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "infra"


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def method_of(module: str) -> str | None:
    """The method package a module belongs to; None for the registry and the `Method` type every method uses."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[2] != "base" else None


def test_imports_run_one_way():
    edges = graph()
    upward = [(m, d) for m, ds in edges.items() for d in ds if LAYERS[layer(d)] > LAYERS[layer(m)]]
    assert not upward, f"imports that reach up: {upward}"
    across = {(method_of(m), method_of(d)) for m, ds in edges.items() for d in ds
              if layer(m) == layer(d) == "methods" and method_of(m) and method_of(d) and method_of(m) != method_of(d)}
    assert across <= METHOD_DEPENDENCIES, f"a method imports another: {across - METHOD_DEPENDENCIES}"


def test_no_circles():
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(edges[module]):
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_each_method_lives_in_one_folder():
    methods = RAYLIB / "methods"
    assert {p.name for p in methods.iterdir() if p.is_dir() and not p.name.startswith("_")} == \
        {"tallrec", "nextitem", "corella", "cocktail"}
    for name in ("tallrec", "nextitem", "corella", "cocktail"):
        assert {"config.py", "pipeline.py"} <= {p.name for p in (methods / name).iterdir()}
    assert not (RAYLIB / "tasks").exists() and not list(RAYLIB.glob("bench_*.py"))


def private_imports(path: Path) -> list[str]:
    """`from <raylib module> import _name`: a module's private name used from another module."""
    return [f"{node.module}.{a.name}" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("raylib")
            for a in node.names if a.name.startswith("_")]


def test_no_module_imports_another_modules_private_names():
    roots = [RAYLIB, RAYLIB.parent / "jobs", RAYLIB.parent / "serve"]
    found = {str(p.relative_to(RAYLIB.parent)): private_imports(p) for root in roots for p in root.rglob("*.py")}
    assert not {p: names for p, names in found.items() if names}


def test_serving_reads_a_methods_artifacts_not_its_training():
    """Serving loads what a method published (its artifacts module, its models, its routing rule), never the
    pipeline or task that trained it."""
    edges = graph()
    training = [(m, d) for m, ds in edges.items() if layer(m) == "serving" for d in ds
                if method_of(d) and d.split(".")[-1] in ("pipeline", "task")]
    assert not training, f"serving imports training code: {training}"
