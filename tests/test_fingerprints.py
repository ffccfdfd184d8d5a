"""A run made by an earlier version resumes after a refactor: the run fingerprints of the shipped CPU recipes
(model, LoRA, training settings, the task's own fields; the records' digest held fixed) are the ones the
version before the Method registry wrote. A change that moves one (a new training field with a default, a
renamed task) must say so here, because every user's half-finished run of that recipe would start over."""

import hashlib
import json

import pytest

from raylib.assets import PROJECT_DIR
from raylib.config import from_dict, load_config
from raylib.train.checkpoint import run_fingerprint

# sha1 of each fingerprint's JSON, computed at commit 39e9a6a (before the Method objects and item features)
BEFORE = {
    "tallrec_cpu": "23e9b69350c00108782938cd8860e4df4b32e775",
    "bigrec_cpu": "3414465cb33e8ba61d25dd9417912eafd6e365b4",
    "genrec_cpu": "9989eff9eea21f0d0d7ec9adeed66b3d971e648b",
    "sasrec": "4f717839fdad0d1b59e4e042a6563af2f87322be",
    "crm": "1c67aeecdc8e0148cbe3bfa9558485bc99ab69a6",
}


def jobs():
    from raylib.methods.corella.crm import CrmTask
    from raylib.methods.nextitem.sasrec import SasrecTask
    from raylib.methods.nextitem.task import BigrecTask, GenrecTask
    from raylib.methods.tallrec.task import TallrecTask

    configs = PROJECT_DIR / "jobs" / "configs"
    yield "tallrec_cpu", TallrecTask, load_config(TallrecTask.config_cls, configs / "tallrec_cpu.yaml", [])
    yield "bigrec_cpu", BigrecTask, load_config(BigrecTask.config_cls, configs / "bigrec_cpu.yaml", [])
    yield "genrec_cpu", GenrecTask, load_config(GenrecTask.config_cls, configs / "genrec_cpu.yaml", [])
    yield "sasrec", SasrecTask, from_dict(SasrecTask.config_cls, {})  # the SASRec stage's defaults
    yield "crm", CrmTask, from_dict(CrmTask.config_cls, {})  # CoReLLa's DCNv2 stage's defaults


@pytest.mark.parametrize("name,task,job", list(jobs()), ids=lambda v: v if isinstance(v, str) else "")
def test_each_recipes_run_fingerprint_is_the_one_its_earlier_runs_saved(name, task, job):
    fingerprint = run_fingerprint(task, job, "RECORDS")  # the data's digest, held fixed
    assert hashlib.sha1(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest() == BEFORE[name]


# sha1 of each shipped recipe's cache keys at commit d30fc4c, before the three split fields became one
# `data.time_split`: the whole job as the leaderboard and Tune key it (less `tracking`, which the environment
# decides) and its data section as stage caches key it. A rename keeps them through `raylib.config.key_form`.
KEYS_BEFORE = {
    "tallrec_cpu": ("0499f907244f1b80aecdc1717a04c86dab0a98c6", "7d8e9023a2e5d098aa6a495e106a27deb518aaa2"),
    "cocktail_cpu": ("45256f5b3348bfff0a83f2c6e79be6d5ff56208a", "1d5bfda1f94fec00b725a5d9a15e83e900a4b5f5"),
    "corella_cpu": ("3d70995185ae48f9a1dc1a8f9d5be37de1ae038e", "8c71be884d99b8a679464b388e23dfc31de8b802"),
    "bigrec_cpu": ("9c240183385647d5adb98f4bbeba1cf45edd890a", "e98c47285a95848a29dea2c07a1611872691f4d8"),
    "genrec_cpu": ("1356b6e9ce90722c9e89ef3cf3eba31b087c5a29", "e98c47285a95848a29dea2c07a1611872691f4d8"),
}


def _sha1(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@pytest.mark.parametrize("recipe", sorted(KEYS_BEFORE))
def test_each_recipes_cache_keys_are_the_ones_its_earlier_stages_saved(recipe):
    from raylib.config import key_dict, key_form
    from raylib.methods import method

    job = load_config(method(recipe.removesuffix("_cpu")).config_class(),
                      PROJECT_DIR / "jobs" / "configs" / f"{recipe}.yaml", [])
    whole = {k: v for k, v in key_form(job).items() if k != "tracking"}
    assert (_sha1(whole), _sha1(key_dict(job.data))) == KEYS_BEFORE[recipe]


def test_renamed_fields_and_values_are_keyed_as_they_were_stored():
    from raylib.config import key_form
    from raylib.methods.cocktail.config import DomainConfig
    from raylib.methods.corella.config import CtrDataConfig
    from raylib.methods.nextitem.config import SequenceDataConfig
    from raylib.methods.tallrec.config import DataConfig

    assert key_form(CtrDataConfig())["split_fractions"] == [0.8, 0.1, 0.1]
    assert key_form(SequenceDataConfig(time_split=[0.6, 0.2, 0.2]))["time_fractions"] == [0.6, 0.2, 0.2]
    assert "time_split" not in key_form(DataConfig())  # TALLRec had no split field: its datasets were cut 8:1:1
    assert key_form(DataConfig(dataset="ml-100k", time_split=[0.6, 0.2, 0.2]))["time_split"] == [0.6, 0.2, 0.2]
    assert key_form(DomainConfig(name="book", source="files", file="b.json"))["source"] == "file"
