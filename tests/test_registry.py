"""A sixth method needs one package and one registry line: once registered, `raylib list`, `raylib train`,
`raylib report` and the planner know it, and every shipped method is found the same way."""

from __future__ import annotations

import pytest

from jobs.cli import main


@pytest.fixture
def echo(monkeypatch):
    from raylib import methods

    monkeypatch.setattr(methods, "REGISTRY", dict(methods.REGISTRY))  # registered for this test only
    return methods.register("sixth_method:METHOD")


def test_a_registered_method_is_listed_trained_reported_and_planned(echo, tmp_path, tiny_model_dir, ray_session,
                                                                    capsys):
    from jobs.cli import report_table
    from jobs.plan import job_class

    assert main(["list"]) == 0
    assert "  echo " in capsys.readouterr().out
    config = tmp_path / "echo.yaml"
    config.write_text(f"model: {{name: {tiny_model_dir}}}\nwords: hi\noutput_dir: {tmp_path / 'run'}\n"
                      "tracking: {enabled: false}\n")
    assert main(["train", "echo", "--config", str(config), "lora.r=4"]) == 0
    assert "echo: hi at rank 4" in capsys.readouterr().out
    assert report_table(str(tmp_path / "run")) == "echo: hi at rank 4"  # found by the report's `method` field
    assert job_class("echo", {}) is echo.config_class()


def test_every_shipped_method_is_one_registry_line_read_from_its_package():
    from raylib.methods import REGISTRY, method, methods
    from raylib import RaylibError

    assert list(methods()) == ["tallrec", "bigrec", "genrec", "corella", "cocktail"]
    for name, target in REGISTRY.items():
        assert target.startswith("raylib.methods.") and method(name).name == name
    with pytest.raises(RaylibError, match="No method 'echo': the methods are tallrec, bigrec"):
        method("echo")
