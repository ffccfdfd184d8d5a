"""Configs are dataclasses with the papers' defaults, loaded from YAML and overridden from the command line."""

import pytest

from raylib import RaylibError
from raylib.config import TallrecJobConfig, load_config


def test_defaults_are_the_papers():
    job = TallrecJobConfig()
    assert (job.lora.r, job.lora.alpha, job.lora.dropout) == (8, 16, 0.05)
    assert job.lora.target_modules == ["q_proj", "v_proj"]
    assert (job.train.learning_rate, job.train.batch_size, job.train.patience) == (1e-4, 128, 10)
    assert job.model.trust_remote_code is False


def test_yaml_then_cli_overrides(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("train:\n  epochs: 3\nlora:\n  r: 4\n")
    job = load_config(TallrecJobConfig, path, ["train.epochs=5", "lora.target_modules=q_proj,k_proj",
                                               "train.zero_extra={stage3_param_persistence_threshold: 0}"])
    assert job.train.epochs == 5 and job.lora.r == 4
    assert job.lora.target_modules == ["q_proj", "k_proj"]
    assert job.train.zero_extra == {"stage3_param_persistence_threshold": 0}


@pytest.mark.parametrize("override, message", [
    ("train.epochs=many", "train.epochs: expected int"),
    ("train.nope=1", "unknown key(s) ['nope']"),
    ("epochs", "must look like section.field=value"),
])
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(RaylibError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_config(TallrecJobConfig, None, [override])


def test_shipped_configs_load():
    for name in ("tallrec", "tallrec_cpu", "bench_tallrec"):
        load_config(TallrecJobConfig if name != "bench_tallrec" else __import__(
            "raylib.bench", fromlist=["BenchTallrecConfig"]).BenchTallrecConfig, f"jobs/configs/{name}.yaml")
