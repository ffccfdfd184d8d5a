"""Configs are dataclasses with the papers' defaults, loaded from YAML and overridden from the command line."""

import re

import pytest

from raylib import RaylibError
from raylib.config import load_config
from raylib.methods.tallrec.config import TallrecJobConfig


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
    """Every YAML under jobs/configs loads into its job's config class (typos and stale fields fail here)."""
    from pathlib import Path

    from raylib.bench.tallrec import BenchTallrecConfig
    from raylib.bench.cocktail import BenchCocktailConfig
    from raylib.bench.leaderboard import BenchLeaderboardConfig
    from raylib.bench.corella import BenchCorellaConfig
    from raylib.bench.nextitem import BenchNextItemConfig
    from raylib.bench.placement import BenchPlacementConfig
    from raylib.bench.scale import BenchScaleConfig
    from raylib.bench.serve import BenchServeConfig
    from raylib.bench.data_scale import BenchScaleDataConfig
    from raylib.bench.reliability import BenchReliabilityConfig
    from raylib.methods.cocktail.config import CocktailJobConfig
    from raylib.methods.corella.config import CorellaJobConfig
    from raylib.methods.nextitem.config import BigrecJobConfig, GenrecJobConfig

    classes = {"tallrec": TallrecJobConfig, "tallrec_cpu": TallrecJobConfig, "bench_tallrec": BenchTallrecConfig,
               "tallrec-llama7b-rtx3090": TallrecJobConfig, "tallrec-llama13b-4xrtx3090": TallrecJobConfig,
               "bigrec": BigrecJobConfig, "bigrec_cpu": BigrecJobConfig, "genrec": GenrecJobConfig,
               "genrec_cpu": GenrecJobConfig, "bench_bigrec": BenchNextItemConfig, "corella": CorellaJobConfig,
               "corella_cpu": CorellaJobConfig, "bench_corella": BenchCorellaConfig, "cocktail": CocktailJobConfig,
               "bench_cocktail": BenchCocktailConfig, "bench_serve": BenchServeConfig, "bench_scale": BenchScaleConfig,
               "bench_placement": BenchPlacementConfig, "cocktail_cpu": CocktailJobConfig,
               "bench_leaderboard": BenchLeaderboardConfig, "bench_scale_data": BenchScaleDataConfig,
               "bench_reliability": BenchReliabilityConfig}
    shipped = {p.stem for p in Path("jobs/configs").glob("*.yaml")}
    assert shipped == set(classes), f"a config without its class here: {shipped ^ set(classes)}"
    for name, cls in classes.items():
        load_config(cls, f"jobs/configs/{name}.yaml")


def test_an_unknown_key_lists_the_sections_known_keys_and_a_range_is_named():
    """GenRec's `generation` section is built by a lambda default; its keys are still the ones listed."""
    from raylib.methods.nextitem.config import GenrecJobConfig

    with pytest.raises(RaylibError, match=r"generation: unknown key\(s\) \['num_templates'\]; known keys are "
                                          r"\['batch_size', 'constrained', 'dtype', 'max_new_tokens', 'num_beams'\]"):
        load_config(GenrecJobConfig, None, ["generation.num_templates=9"])
    with pytest.raises(RaylibError, match="num_templates: Input should be less than or equal to 7"):
        load_config(GenrecJobConfig, None, ["num_templates=9"])


def test_a_stage_job_takes_its_parents_fields_and_a_section_change_names_only_what_changes():
    """How every recipe builds a training stage's job (`stage_job`): the entropy merge's job is RecCocktail's
    job with its own training settings laid over the user's."""
    from raylib.config import stage_job
    from raylib.methods.cocktail.config import CocktailJobConfig, MergeJob

    job = load_config(CocktailJobConfig, None, ["train.seed=7", "lora.r=4"])
    merge = stage_job(MergeJob, job, "entropy merge", base_adapter="b", train={"epochs": 3, "zero_stage": 0})
    assert (merge.base_adapter, merge.lora.r, merge.train.seed) == ("b", 4, 7)  # the parent's, kept
    assert (merge.train.epochs, merge.train.zero_stage) == (3, 0)  # the stage's own
    stage = stage_job(TallrecJobConfig, job, "LoRA stage", output_dir="x")
    assert stage.output_dir == "x" and stage.model == job.model  # RecCocktail's own sections are left out
    with pytest.raises(RaylibError, match="LoRA stage: TallrecJobConfig has no field 'base_adapter'"):
        stage_job(TallrecJobConfig, job, "LoRA stage", base_adapter="b")
    with pytest.raises(RaylibError, match="train.epochs"):
        stage_job(MergeJob, job, "entropy merge", train={"epochs": 0})


@pytest.mark.parametrize("method, overrides, message", [
    # TALLRec's MovieLens records are split by user: a time split there would be ignored, so it is refused
    ("tallrec", ["data.time_split=0.6,0.2,0.2"], "data.time_split cuts data.dataset only"),
    ("cocktail", ["data.time_split=0.6,0.2,0.2"], "data.time_split cuts the domains with source=dataset"),
    ("corella", ["data.source=files", "data.train_file=x.parquet", "data.valid_file=x.parquet",
                 "data.test_file=x.parquet", "data.time_split=0.6,0.2,0.2"], "source=files is not split by time"),
])
def test_one_time_split_is_refused_where_it_would_be_ignored(tmp_path, method, overrides, message):
    from raylib.methods import method as method_of

    (tmp_path / "x.parquet").write_bytes(b"")
    overrides = [o.replace("x.parquet", str(tmp_path / "x.parquet")) for o in overrides]
    with pytest.raises(RaylibError, match=re.escape(message)):
        load_config(method_of(method).config_class(), None, overrides)


@pytest.mark.parametrize("method, overrides, message", [
    ("cocktail", ["domains=[{name: book, source: file, file: b.json}]", "target=book"], "spell it `files`"),
    ("corella", ["data.split_fractions=0.6,0.2,0.2"], "split_fractions is now time_split"),
])
def test_an_old_spelling_is_answered_with_the_new_one(method, overrides, message):
    from raylib.methods import method as method_of

    with pytest.raises(RaylibError, match=re.escape(message)):
        load_config(method_of(method).config_class(), None, overrides)


def test_every_method_reads_the_same_time_split():
    from raylib.config import from_dict
    from raylib.methods import method

    one_dataset = {"data": {"dataset": "ml-100k", "time_split": "0.7,0.2,0.1"}}
    # RecCocktail's domains name their datasets; its data section holds the split they share
    cocktail = {"domains": [{"name": "movie", "source": "dataset", "dataset": "ml-100k"}], "target": "movie",
                "data": {"time_split": "0.7,0.2,0.1"}}
    for name in ("tallrec", "cocktail", "corella", "bigrec", "genrec"):
        job = from_dict(method(name).config_class(), cocktail if name == "cocktail" else one_dataset)
        assert job.data.time_split == [0.7, 0.2, 0.1], name


def test_recCocktails_lora_stages_accept_its_time_split(tmp_path):
    """The stages train on records the split already cut: their TALLRec job must not refuse the cocktail's split."""
    from raylib.config import from_dict
    from raylib.methods.cocktail.config import CocktailJobConfig
    from raylib.methods.cocktail.pipeline import lora_stage_job

    job = from_dict(CocktailJobConfig, {"domains": [{"name": "movie", "source": "dataset", "dataset": "ml-100k"}],
                                        "target": "movie", "data": {"time_split": "0.7,0.2,0.1"}})
    assert lora_stage_job(job, tmp_path / "stage").data.dataset is None
