"""RecCocktail config sections (Hou et al. 2025): domains, the entropy-guided merge, the job."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from raylib.config import STRICT, DatasetSpec, TuneSettings
from raylib.methods.tallrec.config import TallrecJobConfig


@dataclass(config=STRICT)
class DomainConfig:
    """One recommendation domain (`raylib.methods.cocktail.domains`): `name` is how prompts call its items."""
    name: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    # "movielens": TALLRec records built from `data` (the embedded ML-100K unless data.movielens_dir);
    # "files": the user's records, `file` (a TALLRec-format .json / .jsonl / .parquet).
    # "dataset": records of `dataset` (`raylib.data.dataset`: RecBole atomic files or CSV/Parquet tables, or
    # "ml-100k"), split at the shared time split; a domain is a dataset.
    source: Literal["movielens", "files", "dataset"] = "movielens"
    file: str | None = None
    dataset: DatasetSpec | None = None
    # MovieLens only: the records whose target movie has one of these genres (none: every record). With several
    # MovieLens domains, a record belongs to the first domain listed whose genres it has: the domains are
    # disjoint, like the categories of RecCocktail's multi-domain setting.
    genres: list[str] = dataclasses.field(default_factory=list)
    # Cache keys written when `files` was spelled "file" (`raylib.config.key_form`).
    KEY_VALUES: ClassVar[dict[str, dict]] = {"source": {"files": "file"}}

    @field_validator("source", mode="before")
    @classmethod
    def _spelled_as_data_sections(cls, value):
        if value == "file":
            raise ValueError("spell it `files`, as data sections do (the records file stays `file`)")
        return value

    @model_validator(mode="after")
    def _needs_file(self) -> "DomainConfig":
        if (self.source == "dataset") != bool(self.dataset):
            raise ValueError(f"domain {self.name!r}: `dataset` goes with source=dataset, and source=dataset needs it")
        if self.source == "files" and not self.file:
            raise ValueError(f"domain {self.name!r}: source=files needs `file` (a TALLRec-format records file)")
        if self.source == "files" and self.genres:
            raise ValueError(f"domain {self.name!r}: `genres` picks MovieLens records; a file's records are its own")
        return self


@dataclass(config=STRICT)
class MergeSettings:
    """RecCocktail's entropy-guided merge (Sec. 3.3): per-module logits learnt on UNLABELLED target prompts."""
    unlabelled_prompts: int = Field(64, ge=1)   # target-domain training prompts, labels dropped
    held_out_prompts: int = Field(32, ge=1)     # more unlabelled prompts: the entropy that picks the best epoch
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(0.05, gt=0.0)
    init: float = Field(0.5, gt=0.0, lt=1.0)    # the base spirit's starting weight in every module
    # Tune search (labelled VALIDATION only): a global base-spirit weight, plus (per_layer) a shift in
    # [-0.25, 0.25] for each of `layer_groups` consecutive groups of decoder layers (fewer dimensions than one
    # per layer, so a 20-trial search can still learn something).
    per_layer: bool = True
    layer_groups: int = Field(4, ge=1)


# TALLRec job fields RecCocktail does not read (its domains say where records come from; its test sets are the
# warm / cold ones): a config that sets one is refused by name.
IGNORED_FIELDS = {"skip_zero_shot": None,
                  "data": ("source", "train_file", "valid_file", "test_file", "test_samples", "dataset", "train_seed")}

# The default domains: genres of the embedded MovieLens-100K, so the job runs on any clone. The benchmark's second
# domain (books, ../shared) is in jobs/configs/bench_cocktail.yaml.
DEFAULT_DOMAINS = (("drama", ["Drama", "Romance"]), ("action", ["Action", "Adventure", "Thriller", "Sci-Fi", "War"]))


@dataclass(config=STRICT)
class CocktailJobConfig(TallrecJobConfig):
    """RecCocktail (Hou et al. 2025): `data` holds the split and sample settings shared by every domain
    (data.train_samples = the ingredient's few-shot sample); `model` / `lora` / `train` the two LoRA stages."""
    domains: list[DomainConfig] = dataclasses.field(default_factory=lambda: [
        DomainConfig(name=name, genres=genres) for name, genres in DEFAULT_DOMAINS])
    target: str = "action"
    base_samples: int = Field(256, ge=1)         # per domain, for the base spirit
    warm_cold_samples: int = Field(300, ge=0)    # at most this many warm and cold test records (0 = all)
    merge: MergeSettings = dataclasses.field(default_factory=MergeSettings)
    tune: TuneSettings = dataclasses.field(default_factory=lambda: TuneSettings(num_samples=20))
    output_dir: str = Field("runs/cocktail", min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _refuse_ignored(cls, values):
        """A field RecCocktail does not read, set to anything but its default, is refused by name (a config
        written back with `to_dict` holds the defaults, and passes)."""
        from raylib.methods.tallrec.config import DataConfig

        given = values.kwargs if hasattr(values, "kwargs") else values
        if not isinstance(given, dict):
            return values
        defaults = {"skip_zero_shot": False, "data": {k: getattr(DataConfig(), k) for k in IGNORED_FIELDS["data"]}}
        named = ["skip_zero_shot"] if given.get("skip_zero_shot", False) not in (False, "false") else []
        data = given.get("data") if isinstance(given.get("data"), dict) else {}
        named += [f"data.{k}" for k in IGNORED_FIELDS["data"] if k in data and data[k] != defaults["data"][k]]
        if named:
            raise ValueError(f"RecCocktail does not read {', '.join(named)}: each domain names its records "
                             "(`domains`), and its test sets are the target's warm / cold-start records")
        return values

    @model_validator(mode="after")
    def _time_split_read(self) -> "CocktailJobConfig":
        """The time split cuts the domains that are datasets (MovieLens domains are split by user). It replaces
        TALLRec's check of the same name on purpose (pydantic keeps the subclass's): RecCocktail's datasets are in
        its domains, not in `data.dataset`."""
        if self.data.moves_the_split() and not any(d.source == "dataset" for d in self.domains):
            raise ValueError("data.time_split cuts the domains with source=dataset, and no domain has it: remove it")
        return self

    @model_validator(mode="after")
    def _target_is_a_domain(self) -> "CocktailJobConfig":
        names = [d.name for d in self.domains]
        if len(set(names)) != len(names):
            raise ValueError(f"domain names must differ: {names}")
        if self.target not in names:
            raise ValueError(f"target {self.target!r} is not one of the domains {names}")
        return self


@dataclass(config=STRICT)
class MergeJob(CocktailJobConfig):
    """What the entropy-merge workers get: the user's config plus the two adapters to mix."""
    base_adapter: str = ""
    ingredient_adapter: str = ""
