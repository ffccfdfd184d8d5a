"""The `raylib` command: its registry loads, `raylib list` names everything shipped with its command, and the
installed command refuses bad input in one line (exit code 2) before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jobs.cli import BENCHES, CONFIGS, _load, main, methods

REPO = Path(__file__).resolve().parents[1]


def test_every_registered_method_and_benchmark_loads_with_its_recipe():
    from raylib.config import load_config

    for table in (methods(), BENCHES):
        for name, entry in table.items():
            load_config(_load(entry.config), CONFIGS / entry.recipe)
            assert callable(_load(entry.run)), name
            assert isinstance(entry.show, tuple) or callable(_load(entry.show)), name


def test_raylib_list_names_every_method_benchmark_and_recipe(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in list(methods()) + list(BENCHES):
        assert f"  {name} " in out
    for path in CONFIGS.glob("*.yaml"):
        assert path.name in out
    assert "raylib train tallrec --config jobs/configs/tallrec_cpu.yaml" in out and "raylib bench bigrec" in out


def test_every_shipped_config_opens_with_the_command_that_runs_it():
    from jobs.cli import recipes

    for name, about, command in recipes():
        assert command, f"{name}: no method or benchmark runs it"
        assert (CONFIGS / name).read_text().startswith(f"# {command}\n"), name
        assert about and not about.startswith("raylib "), name  # then what it is


def test_the_installed_command_refuses_bad_input_in_one_line(tmp_path):
    raylib = str(Path(sys.executable).parent / "raylib")

    def run(*args):
        done = subprocess.run([raylib, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
        return done.returncode, done.stderr.strip().splitlines()

    code, err = run("train", "tallrec", "train.zero_stage=5", f"output_dir={tmp_path}")
    assert code == 2 and len(err) == 1 and "train.zero_stage: Input should be 0, 1, 2 or 3" in err[0]
    code, err = run("serve", "--artifacts", str(tmp_path))
    assert code == 2 and len(err) == 1 and "No CoReLLa artifacts" in err[0]
    code, err = run("report", str(tmp_path))
    assert code == 2 and len(err) == 1 and "No report.json" in err[0]
    assert run("bench", "nope")[0] == 2 and run("nope")[0] == 2


def test_train_help_lists_every_field_with_its_default_and_description(capsys):
    import pytest

    from raylib.config_help import field_docs

    for name, method in methods().items():
        with pytest.raises(SystemExit) as done:
            main(["train", name, "--help"])
        out = capsys.readouterr().out
        assert done.value.code == 0 and out.startswith(f"usage: raylib train {name} "), name
        for field, default, _ in field_docs(method.config_class()):
            assert f"  {field} = {default}" in out, (name, field)
    # the description of a field is its comment in the config class
    assert "Early stopping: stop after this many validations without improvement" in out
