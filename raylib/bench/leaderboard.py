"""The leaderboard: every method on one dataset and its one time split, side by side.

A client of the method jobs. Each runs from its recipe (`recipes`: the CPU recipes by default) with
`data.dataset` set to the leaderboard's dataset, in `<output_dir>/<method>`, and keeps its outcome in
`<output_dir>/stages/`, so a rerun finishes in seconds:
  preference   one seeded sample of the test period's preference records (TALLRec's view: the `test_samples` it
               scores) scored by every model: the base LLM zero-shot, TALLRec, RecCocktail's entropy-merged adapter,
               CoReLLa's CRM, LLM and routed system, and DCNv2 alone (CoReLLa's stage 1); CoReLLa's models read
               the CTR rows of the same (user, item) pairs. AUC, LogLoss, accuracy.
  ranking      BIGRec (+ popularity, + SASRec), GenRec, popularity and SASRec on the same test windows, full
               ranking (the BIGRec benchmark's runs: `ranking_dir` shares their trained models and beams).
Each row: the mean, its 95% bootstrap interval, and the paired bootstrap difference to the best baseline
(zero-shot or DCNv2; popularity or SASRec); training time (the seconds of its optimizer steps), inference time on
the test items, tokens/s and the recipe. Writes `report` as JSON, PNG and Markdown. Inside a tracked job (MLflow)
each method is a child run of the leaderboard's run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from pydantic import Field, PositiveInt, field_validator
from pydantic.dataclasses import dataclass

from raylib import RaylibError
from raylib.assets import PROJECT_DIR
from raylib.bench.common import invocation_started, time_spent
from raylib.bench.leaderboard_report import (PREFERENCE_BASELINES, RANKING_BASELINES, save, slice_tables,
                                             summary, write_scores)
from raylib.config import (STRICT, TIME_SPLIT, DataSource, DatasetSpec, Seed, SplitShares, TrackingSettings,
                           from_dict, key_form, to_dict)
from raylib.methods.corella.artifacts import STAGE_DIRS
from raylib.stages import cached_stage

PREFERENCE = ("zero_shot", "tallrec", "cocktail", "corella_crm", "corella_llm", "corella_routed", "dcnv2",
              "dcnv2_llm_emb")
RANKING = ("popularity", "sasrec", "sasrec_llm_emb", "bigrec", "bigrec_pop", "bigrec_cf", "genrec",
           "genrec_grounded")
SELECTION_RULES = {
    "tallrec": "the epoch with the best validation AUC",
    "cocktail": "merge coefficients by entropy on unlabelled validation prompts; the Tune search by validation AUC",
    "corella": "the routing threshold with the best validation AUC within the LLM budget; routing kept only where "
               "its paired interval over the CRM alone on validation is above 0",
    "bigrec": "bigrec_run, named in the config: the BIGRec benchmark's recipe_on_validation (the best validation "
              "NDCG@10 where its paired interval separates it from every other run, else the lowest validation "
              "loss)",
    "genrec": "genrec_run, named in the config: GenRec as its authors run it (no sweep)"}
SHARED_BOOKS = PROJECT_DIR.parent / "shared" / "data" / "tallrec" / "book" / "valid.json"


@dataclass(config=STRICT)
class BenchLeaderboardConfig:
    dataset: DatasetSpec = "ml-100k"
    # The one time split: every job's data section gets it (`raylib.config.DataSource.time_split`), and a
    # registered method's `leaderboard_scores` reads it from the `DataSource` it is given.
    time_split: SplitShares = dataclasses.field(default_factory=lambda: list(TIME_SPLIT))
    model_name: str = Field("smollm2-135m", min_length=1)  # every method's model.name (a name or a folder)
    # The preference test sample: TALLRec's view of the test period, seeded (0 = every record).
    test_samples: int = Field(500, ge=0)
    seed: int = 42
    # Each method's recipe (a file under jobs/configs or a path) and the changes the leaderboard makes to it.
    recipes: dict[str, str] = dataclasses.field(default_factory=lambda: {
        "tallrec": "tallrec_cpu.yaml", "corella": "corella_cpu.yaml", "cocktail": "cocktail_cpu.yaml",
        "nextitem": "bench_bigrec.yaml"})
    changes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # RecCocktail's second domain for the base spirit (TALLRec-format records); absent = the base spirit learns
    # the target dataset alone (the job says so).
    second_domain: str | None = str(SHARED_BOOKS)
    # The BIGRec benchmark's runs (`raylib.bench.nextitem`) the ranking rows take: BIGRec's recipe chosen on
    # validation (docs/nextitem.md) and GenRec as its authors run it.
    bigrec_run: str = "response_lr3e-3"
    genrec_run: str = "authors"
    ranking_dir: str | None = None  # None: <output_dir>/nextitem
    parts: list[str] = dataclasses.field(default_factory=lambda: ["preference", "ranking"])
    # The data-budget axis (`raylib.bench.leaderboard_budgets`): per seed and budget N, TALLRec and DCNv2 on the
    # same N records (TALLRec's paper: 16 / 64 / 256), scored on the preference sample. [] = none.
    budgets: list[PositiveInt] = dataclasses.field(default_factory=lambda: [16, 64, 256])
    budget_seeds: list[Seed] = dataclasses.field(default_factory=lambda: [42, 43])  # 42: `seed`, the table's
    # The LLM rows trained at each budget point (DCNv2 always is): TALLRec, RecCocktail (the table's base spirit
    # + TALLRec's adapter on the N records as its ingredient) and CoReLLa's LLM (its two LLM stages on them).
    budget_rows: list[str] = dataclasses.field(default_factory=lambda: ["tallrec", "cocktail", "corella_llm"])
    # Ranking: BIGRec and GenRec on N training windows, SASRec and popularity on the same windows (BIGRec's
    # paper: 1024; at the BIGRec benchmark's own N the table's runs are the points). One seed. [] = none.
    ranking_budgets: list[PositiveInt] = dataclasses.field(default_factory=lambda: [256, 1024])
    # The cold slices: users / items with at most this many interactions in the training period.
    cold_max_interactions: int = Field(5, ge=0)
    # How each method's run is chosen, written into the report before any test figure is computed (and then
    # the candidates each rule saw). Every rule reads validation data only; none may change after a test figure.
    selection: dict[str, str] = dataclasses.field(default_factory=lambda: dict(SELECTION_RULES))
    bootstrap_rounds: int = Field(2000, ge=100)
    output_dir: str = Field("runs/leaderboard", min_length=1)
    report: str = "reports/leaderboard.json"
    ray_address: str | None = None
    tracking: TrackingSettings = dataclasses.field(default_factory=TrackingSettings)

    @field_validator("budget_rows")
    @classmethod
    def _rows_with_budgets(cls, rows: list[str]) -> list[str]:
        from raylib.bench.leaderboard_budgets import BUDGET_ROWS

        unknown = sorted(set(rows) - set(BUDGET_ROWS))
        if unknown or "tallrec" not in rows:
            raise ValueError(f"{unknown or rows}: budget rows are tallrec (always: its records are the budget's) "
                             f"and any of {', '.join(BUDGET_ROWS[1:])}")
        return rows

    @field_validator("selection")
    @classmethod
    def _rules_of_methods(cls, rules: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(rules) - set(SELECTION_RULES))
        if unknown:
            raise ValueError(f"{unknown} name no method of the leaderboard ({', '.join(SELECTION_RULES)})")
        return rules


# ------------------------------------------------------------------ the method jobs
def _merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in change.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def method_job(config: BenchLeaderboardConfig, method: str, cls: type, imposed: dict[str, Any]):
    """The method's recipe, then what the leaderboard imposes (dataset, folder, model), then `changes[method]`."""
    recipe = Path(config.recipes[method])
    path = recipe if recipe.is_file() else PROJECT_DIR / "jobs" / "configs" / recipe
    if not path.is_file():
        raise RaylibError(f"leaderboard: recipes.{method}: no file {recipe} (nor jobs/configs/{recipe}).")
    changes = config.changes.get(method, {})
    fixed = sorted(set(changes.get("data") or {}) & {"dataset", "time_split"})
    if fixed:
        raise RaylibError(f"leaderboard: changes.{method}.data sets {', '.join(fixed)}, which the leaderboard gives "
                          "every job (its own `dataset` and `time_split`): change those instead.")
    values = yaml.safe_load(path.read_text()) or {}
    values = {k: v for k, v in values.items() if k != "report"}
    values = _merge(values, {"model": {"name": config.model_name}, "ray_address": config.ray_address,
                             "tracking": to_dict(config.tracking),
                             "output_dir": str(_out(config) / method), **imposed})
    return from_dict(cls, _merge(values, changes), where=f"leaderboard {method} ({path.name})")


def _out(config: BenchLeaderboardConfig) -> Path:
    return Path(config.output_dir).expanduser().resolve()


def jobs_of(config: BenchLeaderboardConfig) -> dict[str, Any]:
    """Every method's job config, built (and so checked) before any of them runs: a bad recipe or change is one
    line before the first training."""
    from raylib.bench.nextitem import BenchNextItemConfig
    from raylib.methods.cocktail.config import CocktailJobConfig
    from raylib.methods.corella.config import CorellaJobConfig
    from raylib.methods.tallrec.config import TallrecJobConfig

    jobs: dict[str, Any] = {}
    if "preference" in config.parts:
        split = {"dataset": config.dataset, "time_split": config.time_split}
        data = {**split, "test_samples": config.test_samples, "seed": config.seed}
        jobs["tallrec"] = method_job(config, "tallrec", TallrecJobConfig, {"data": data})
        domains = [{"name": "movie", "source": "dataset", "dataset": config.dataset}]
        second = Path(config.second_domain).expanduser() if config.second_domain else None
        if second is not None and second.is_file():
            domains.append({"name": "book", "source": "files", "file": str(second)})
        else:
            print(f"[leaderboard] RecCocktail: no second domain ({config.second_domain or 'none given'}): the base "
                  "spirit learns the target dataset alone", flush=True)
        jobs["cocktail"] = method_job(config, "cocktail", CocktailJobConfig, {
            "domains": domains, "target": "movie", "data": {"time_split": config.time_split}})
        jobs["corella"] = method_job(config, "corella", CorellaJobConfig, {"data": split})
        if "cocktail" in config.budget_rows:
            same_adapter_shape(jobs["cocktail"], jobs["tallrec"])
        jobs.update(registered_jobs(config))
    # the ranking rows' jobs; the preference part's LLM-feature row reads BIGRec's catalogue embeddings too
    folder = Path(config.ranking_dir).expanduser().resolve() if config.ranking_dir else _out(config) / "nextitem"
    bench = method_job(config, "nextitem", BenchNextItemConfig, {
        "data": {"dataset": config.dataset, "time_split": config.time_split}, "output_dir": str(folder)})
    if config.bigrec_run not in bench.bigrec_runs or config.genrec_run not in bench.genrec_runs:
        raise RaylibError(f"leaderboard: bigrec_run {config.bigrec_run!r} / genrec_run {config.genrec_run!r} "
                          f"must be runs of the BIGRec benchmark ({sorted(bench.bigrec_runs)} / "
                          f"{sorted(bench.genrec_runs)}).")
    jobs["nextitem"] = bench
    return jobs


BUILT_IN = ("tallrec", "corella", "cocktail", "nextitem")  # the methods whose rows this module computes


def registered_jobs(config: BenchLeaderboardConfig) -> dict[str, Any]:
    """The job of every other method named in `recipes`: a registered method that declares how it scores the
    preference sample (`Method.leaderboard_scores`)."""
    from raylib.methods import method

    jobs = {}
    for name in sorted(set(config.recipes) - set(BUILT_IN)):
        found = method(name)
        if not found.leaderboard_scores:
            raise RaylibError(f"leaderboard: recipes.{name}: method {name} declares no leaderboard_scores.")
        jobs[name] = method_job(config, name, found.config_class(), {})
    return jobs


def same_adapter_shape(cocktail, tallrec) -> None:
    """RecCocktail's budget points mix the table's base spirit with TALLRec's adapter module by module: the two
    recipes must give the same base model and LoRA shape, checked before anything trains."""
    for part in ("model", "lora"):
        if to_dict(getattr(cocktail, part)) != to_dict(getattr(tallrec, part)):
            raise RaylibError(f"leaderboard: budget_rows has cocktail, so the cocktail and tallrec recipes need the "
                              f"same {part} section ({to_dict(getattr(cocktail, part))} vs "
                              f"{to_dict(getattr(tallrec, part))}); change one or drop cocktail from budget_rows.")


def run_method(config: BenchLeaderboardConfig, name: str, job, run: Callable[[Any], dict[str, Any]],
               inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """`run(job)` as a child MLflow run of the leaderboard's, its outcome kept under the job's whole config (and
    `inputs`, what else `run` reads)."""
    from raylib import tracking

    def compute() -> dict[str, Any]:
        start = time.time()
        print(f"[leaderboard] {name} ...", flush=True)
        with tracking.job_run(job.tracking, job.output_dir, f"leaderboard {name}", to_dict(job)) as tracked:
            report = run(job)
            if tracked:
                tracking.log_report(tracked, report, Path(job.output_dir))
        job_s, spent = time.time() - start, time_spent(_out(config))["seconds"] or 0.0
        print(f"[leaderboard] {name}: {job_s:.0f} s ({spent / 3600:.2f} h in all so far)", flush=True)
        return {"report": _jsonable(report), "job_s": job_s}

    from raylib.data.dataset import dataset_fingerprint

    key = {"job": key_form(job), "dataset": dataset_fingerprint(config.dataset), **(inputs or {})}
    return cached_stage(_out(config) / "stages" / f"{name}.json", key, compute)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def training(*folders: str | Path) -> dict[str, Any]:
    """Seconds in optimizer steps, mean training tokens/s and the epochs of finished trainer runs (their
    `finished.json`; epochs: one figure per stage, joined by "+")."""
    seconds, rates, epochs = 0.0, [], []
    for folder in folders:
        path = Path(folder) / "finished.json"
        if not path.is_file():
            return {"train_s": None, "train_tokens_per_s": None, "epochs": None}
        state = json.loads(path.read_text())["state"]
        seconds += float(sum(state.get("step_times", [])))
        rates += [h["train_tokens_per_s"] for h in state.get("history", []) if h.get("train_tokens_per_s")]
        epochs.append(str(state.get("epoch", 0)))
    return {"train_s": seconds, "train_tokens_per_s": float(np.mean(rates)) if rates else None,
            "epochs": "+".join(epochs) if epochs else "0"}


# ------------------------------------------------------------------ preference prediction
def preference_scores(config: BenchLeaderboardConfig, jobs: dict[str, Any]):
    """(the test sample: user, item, label; per row: probabilities and costs; the dataset's CTR data and the
    sample's CTR test rows, which CoReLLa's models and DCNv2 score)."""
    from raylib.bench.leaderboard_budgets import rows_of
    from raylib.data.ctr import load_ctr_data
    from raylib.methods.tallrec.pipeline import run_tallrec

    tallrec = jobs["tallrec"]
    outcome = run_method(config, "tallrec", tallrec, run_tallrec)
    scored = json.loads(Path(outcome["report"]["test_scores"]).read_text())
    sample = {k: scored[k] for k in ("user_id", "item_id", "label")}
    report = outcome["report"]
    costs = training(tallrec.output_dir)
    seen = {"features": TEXT_FEATURES}
    rows = {"zero_shot": _row(scored["zero_shot"], report["zero_shot"], {"train_s": 0.0, "epochs": "0"},
                              "the base model", train_records=0, **seen),
            "tallrec": _row(scored["tuned"], report["tuned"], costs, config.recipes["tallrec"],
                            train_records=report["data"]["train"], **seen)}
    rows.update(cocktail_rows(config, jobs["cocktail"], tallrec, sample))
    ctr = load_ctr_data(jobs["corella"].data)
    sample_rows = ctr.test.take(rows_of(ctr.test, list(zip(sample["user_id"], sample["item_id"])), "test"))
    rows.update(corella_rows(config, jobs["corella"], sample, ctr, sample_rows))
    rows["dcnv2_llm_emb"] = dcnv2_llm_emb_row(config, jobs, sample, ctr, sample_rows)
    rows.update(registered_rows(config, jobs, sample))
    return sample, rows, (ctr, sample_rows)


def registered_rows(config: BenchLeaderboardConfig, jobs: dict[str, Any], sample) -> dict[str, dict[str, Any]]:
    """Each registered method's row (`registered_jobs`): its `leaderboard_scores` on the sample, kept under its
    job and the sample."""
    from raylib.methods import method
    from raylib.methods.base import load

    rows = {}
    data = DataSource(dataset=config.dataset, time_split=config.time_split)
    for name in sorted(set(jobs) - set(BUILT_IN)):
        scores = load(method(name).leaderboard_scores)
        found = run_method(config, name, jobs[name], lambda job: scores(job, data, sample),
                           inputs={"sample": sample})["report"]
        if len(found["probabilities"]) != len(sample["label"]):
            raise RaylibError(f"leaderboard: {name}'s leaderboard_scores gave {len(found['probabilities'])} "
                              f"probabilities for {len(sample['label'])} sample records.")
        missing = [key for key in ("train_records", "features") if key not in found]
        if missing:
            raise RaylibError(f"leaderboard: {name}'s leaderboard_scores row lacks {', '.join(missing)} (what the "
                              "table shows of every row: `raylib.methods.base.Method.leaderboard_scores`).")
        costs = {"train_s": found.get("train_s"), "train_tokens_per_s": None, "epochs": found.get("epochs")}
        rows[name] = _row(found["probabilities"], found, costs, config.recipes[name],
                          train_records=found["train_records"], features=found["features"])
    return rows


def dcnv2_llm_emb_row(config: BenchLeaderboardConfig, jobs: dict[str, Any], sample, ctr, rows) -> dict[str, Any]:
    """DCNv2 as the `dcnv2` row learns, with the LLM's title vector of the target item as one more field."""
    from raylib.bench.leaderboard_features import FEATURES, dcnv2_row, item_embeddings
    from raylib.methods.nextitem.pipeline import load_sequence_data

    bench = jobs["nextitem"]
    bigrec, _ = nextitem_jobs(config, bench)
    embeddings = item_embeddings(bigrec, load_sequence_data(bench.data), _out(config))
    probabilities, inference, folder = dcnv2_row(jobs["corella"], ctr, sample, rows, embeddings, _out(config))
    return _row(probabilities, inference, training(folder), f"{config.recipes['corella']} (stage 1 alone) + "
                f"{FEATURES}", train_records=ctr.train.num_rows, features=f"{CRM_FEATURES}; {FEATURES}")


# What each row reads of a record (the table's "input features" column).
TEXT_FEATURES = "titles, ratings"  # the prompt: the user's rated titles, the target's title
CRM_FEATURES = "ids, ratings, user and item fields"  # DCNv2: ids, history ids + ratings, age/gender/job/zip/year/genres
BOTH_FEATURES = f"{CRM_FEATURES}; {TEXT_FEATURES}"


def _row(probs: list[float], scored: dict[str, Any], costs: dict[str, Any], recipe: str, train_records: int,
         features: str) -> dict[str, Any]:
    return {"probabilities": list(probs), "infer_s": scored.get("seconds"),
            "infer_tokens_per_s": scored.get("approx_tokens_per_s"), **costs, "recipe": recipe,
            "train_records": int(train_records), "features": features}


def cocktail_rows(config: BenchLeaderboardConfig, job, tallrec_job, sample) -> dict[str, dict[str, Any]]:
    """RecCocktail with the dataset as its target domain (its test period = TALLRec's) and `second_domain`."""
    from raylib.methods.cocktail.pipeline import run_cocktail
    from raylib.methods.tallrec.pipeline import load_tallrec_data, score_on_ray
    from raylib.train.checkpoint import adapter_sha1

    outcome = run_method(config, "cocktail", job, run_cocktail)
    adapter = Path(job.output_dir) / outcome["report"]["adapters"]["entropy"]

    def score() -> dict[str, Any]:
        records = load_tallrec_data(tallrec_job.data).test  # TALLRec's test sample: made only when not kept
        _same_sample(records, sample, "RecCocktail")
        return score_on_ray(job, records, str(adapter))

    key = {"adapter": adapter_sha1(adapter), "sample": sample, "eval": to_dict(job.eval)}
    scored = cached_stage(_out(config) / "stages" / "cocktail_scores.json", key, score)
    folders = [Path(job.output_dir) / "base_spirit", Path(job.output_dir) / job.target / "ingredient",
               Path(job.output_dir) / job.target / "entropy_merge"]
    seen = outcome["report"]["records"]  # labelled records: the base spirit's (every domain) and the ingredient's
    return {"cocktail": _row(scored["probabilities"], scored, training(*folders), config.recipes["cocktail"],
                             train_records=seen["base_train"] + seen["ingredient_train"], features=TEXT_FEATURES)}


def _same_sample(records, sample: dict[str, Any], who: str) -> None:
    if [r.user_id for r in records] != sample["user_id"] or [r.item_id for r in records] != sample["item_id"]:
        raise RaylibError(f"leaderboard: {who} would score other test records than TALLRec's sample.")


def corella_rows(config: BenchLeaderboardConfig, job, sample, ctr, rows) -> dict[str, dict[str, Any]]:
    """CoReLLa's final CRM, LLM and routed system, and its stage-1 DCNv2 alone, on `rows`: the CTR rows of the
    sample's (user, item) pairs (the same interactions, with the CRM's features) out of `ctr`."""
    from raylib.methods.corella.pipeline import run_corella
    from raylib.stages import file_sha1

    outcome = run_method(config, "corella", job, run_corella)
    artifacts = Path(outcome["report"]["artifacts"])
    stage1 = Path(outcome["report"]["stages"]["crm"])
    key = {"crm": file_sha1(artifacts / "crm" / "model.safetensors"), "stage1": file_sha1(stage1 / "model.safetensors"),
           "adapter": file_sha1(artifacts / "adapter" / "adapter_model.safetensors"), "sample": sample,
           "model": to_dict(job.model)}
    scored = cached_stage(_out(config) / "stages" / "corella_scores.json", key,
                          lambda: _score_corella(job, artifacts, stage1, rows))
    agree = float(np.mean(np.array(scored["labels"]) == np.array(sample["label"])))
    if agree < 1.0:
        print(f"[leaderboard] CoReLLa's CTR labels agree with TALLRec's on {agree:.1%} of the sample "
              "(the ratings' thresholds differ); every row is scored against TALLRec's labels", flush=True)
    out = _out(config) / "corella"
    every_stage = training(*(out / folder for folder in STAGE_DIRS.values()))
    recipe = config.recipes["corella"]
    # the CRM learns every training row; the LLM stages each a sample of them (the same records, fewer)
    crm_rows = ctr.train.num_rows
    both = {"train_records": crm_rows, "features": BOTH_FEATURES}
    return {
        "corella_crm": _row(scored["crm"], {"seconds": scored["crm_seconds"]}, every_stage, recipe, **both),
        "corella_llm": _row(scored["llm"], {"seconds": scored["llm_seconds"]}, every_stage, recipe, **both),
        "corella_routed": {**_row(scored["routed"], {"seconds": scored["routed_seconds"]}, every_stage, recipe,
                                  **both),
                           "llm_share": float(np.mean(scored["mask"])), "threshold": scored["threshold"]},
        "dcnv2": _row(scored["dcnv2"], {"seconds": scored["dcnv2_seconds"]}, training(out / STAGE_DIRS["crm"]),
                      f"{recipe} (stage 1 alone)", train_records=crm_rows, features=CRM_FEATURES),
    }


def _score_corella(job, artifacts: Path, stage1: Path, rows) -> dict[str, Any]:
    """Both of CoReLLa's models and the routed system in one placed actor (as the job scores them), DCNv2 alone
    in a placed task; the driver loads no weights."""
    from raylib import placement
    from raylib.data.ctr import CtrVocab
    from raylib.methods.corella.crm import VOCAB_FILE
    from raylib.methods.corella.artifacts import RoutedScorer, check_artifacts
    from raylib.methods.corella.pipeline import crm_scores_of

    routing = check_artifacts(artifacts)
    records = CtrVocab.load(artifacts / "crm" / VOCAB_FILE).records(rows, with_text=True)
    where = placement.for_job(job)
    scorer = placement.start(RoutedScorer, artifacts / "crm", artifacts / "adapter", job, routing.threshold,
                             placement=where)
    try:
        both = scorer.call("both_scores", records)
        routed = scorer.call("routed_timed", records, routing.threshold)
    finally:
        scorer.close()
    start = time.perf_counter()
    dcnv2 = placement.run(crm_scores_of, str(stage1), CtrVocab.load(stage1 / VOCAB_FILE).records(rows),
                          placement=where)
    return {**both, "routed": routed["probs"], "mask": routed["mask"], "routed_seconds": routed["seconds"],
            "threshold": routing.threshold, "dcnv2": np.asarray(dcnv2).tolist(),
            "dcnv2_seconds": time.perf_counter() - start, "labels": [r["label"] for r in records]}


# ------------------------------------------------------------------ next-item ranking
def nextitem_jobs(config: BenchLeaderboardConfig, bench):
    """The BIGRec and GenRec jobs of the BIGRec benchmark's chosen runs (`bigrec_run`, `genrec_run`)."""
    from raylib.bench.nextitem import run_jobs
    from raylib.methods.nextitem.config import BigrecJobConfig, GenrecJobConfig

    (_, bigrec), = run_jobs(bench, "bigrec", BigrecJobConfig, {config.bigrec_run: bench.bigrec_runs[config.bigrec_run]})
    (_, genrec), = run_jobs(bench, "genrec", GenrecJobConfig, {config.genrec_run: bench.genrec_runs[config.genrec_run]},
                            num_templates=bench.num_templates, baselines=False,
                            generation={"num_beams": bench.genrec_num_beams})
    # the benchmark's run jobs leave `tracking` at its default: the leaderboard's decides
    return tuple(dataclasses.replace(job, tracking=bench.tracking) for job in (bigrec, genrec))


def ranking_ranks(config: BenchLeaderboardConfig, bench):
    """(the test windows' counts, per row: each window's rank of its target and costs, the windows' user and
    target columns), from the BIGRec benchmark's runs on this dataset."""
    from raylib.bench.leaderboard_features import FEATURES, item_embeddings, sasrec_ranks
    from raylib.methods.nextitem.pipeline import load_sequence_data, run_bigrec, run_genrec

    data = load_sequence_data(bench.data)
    bigrec, genrec = nextitem_jobs(config, bench)
    recipe = config.recipes["nextitem"]
    b = run_method(config, "bigrec", bigrec, lambda job: run_bigrec(job, data))["report"]
    g = run_method(config, "genrec", genrec, lambda job: run_genrec(job, data))["report"]
    llm_b, llm_g = training(bigrec.output_dir), training(genrec.output_dir)
    sasrec = training(Path(bigrec.output_dir) / "sasrec-heldout")
    cost = {"popularity": {"train_s": 0.0, "epochs": "0"}, "sasrec": sasrec, "bigrec": llm_b, "bigrec_pop": llm_b,
            "bigrec_cf": {"train_s": _plus(llm_b["train_s"], sasrec["train_s"]),
                          "train_tokens_per_s": llm_b["train_tokens_per_s"],
                          "epochs": f"{llm_b['epochs']}+{sasrec['epochs']}"},
            "genrec": llm_g, "genrec_grounded": llm_g}
    ranks = {**{k: b["ranks"][k] for k in ("popularity", "sasrec", "bigrec", "bigrec_pop", "bigrec_cf")},
             "genrec": g["ranks"]["genrec_exact"], "genrec_grounded": g["ranks"]["genrec_grounded"]}
    runs = {"bigrec": f"bigrec/{config.bigrec_run}", "genrec": f"genrec/{config.genrec_run}"}
    rows = {name: {"ranks": r, **cost[name], **_ranking_facts(name, bigrec, genrec, len(data.train)),
                   "recipe": f"{recipe} ({runs.get(name.split('_')[0], name)})"} for name, r in ranks.items()}
    embedded, folder = sasrec_ranks(bigrec, data, item_embeddings(bigrec, data, _out(config)), _out(config))
    rows["sasrec_llm_emb"] = {"ranks": embedded, **training(folder), "recipe": f"{recipe} (sasrec) + {FEATURES}",
                              "train_records": len(data.train), "features": f"ids; {FEATURES}"}
    windows = {"test_windows": len(data.test), "catalogue_items": len(data.catalogue)}
    timelines = data.test.timelines
    records = {"window": np.arange(len(data.test)),
               "user_id": timelines.user_ids[timelines.user_of(data.test.at)].astype(str),
               "item_id": timelines.item_ids[data.test.targets].astype(str)}
    context = {"bigrec": bigrec, "genrec": genrec, "data": data, "reports": {"bigrec": b, "genrec": g}}
    return windows, rows, records, context


def _ranking_facts(name: str, bigrec, genrec, train_windows: int) -> dict[str, Any]:
    """What a ranking row learned from (training windows) and reads (its input features)."""
    def sampled(job) -> int:
        n = job.data.train_samples
        return min(n, train_windows) if n > 0 else train_windows

    facts = {"popularity": (train_windows, "item counts"), "sasrec": (train_windows, "ids"),
             "bigrec": (sampled(bigrec), "titles"), "bigrec_pop": (sampled(bigrec), "titles, item counts"),
             "bigrec_cf": (sampled(bigrec) + train_windows, "titles; ids (SASRec)"),
             "genrec": (sampled(genrec), "titles"), "genrec_grounded": (sampled(genrec), "titles")}
    records, features = facts[name]
    return {"train_records": int(records), "features": features}


def _plus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


# ------------------------------------------------------------------ the tables
def preference_table(sample: dict[str, Any], rows: dict[str, dict[str, Any]], rounds: int) -> dict[str, Any]:
    """AUC / LogLoss / accuracy per row, the AUC's bootstrap interval, and each row minus the best baseline."""
    from raylib.metrics import binary_report

    labels = np.asarray(sample["label"])
    found = summary("preference", labels, {n: np.asarray(r["probabilities"]) for n, r in rows.items()},
                    PREFERENCE_BASELINES, rounds)
    return {name: {**binary_report(labels, np.asarray(row["probabilities"])),
                   **{k: v for k, v in row.items() if k != "probabilities"},
                   **_interval_keys("auc", found[name], len(labels), row.get("infer_s"))}
            for name, row in rows.items()}


def ranking_table(rows: dict[str, dict[str, Any]], rounds: int) -> dict[str, Any]:
    """NDCG@K / HR@K per row, NDCG@10's bootstrap interval, and each row minus the best baseline."""
    from raylib.metrics import ranking_report

    found = summary("ranking", None, {n: np.asarray(r["ranks"]) for n, r in rows.items()}, RANKING_BASELINES,
                    rounds)
    return {name: {**ranking_report(row["ranks"]), **{k: v for k, v in row.items() if k != "ranks"},
                   **_interval_keys("ndcg@10", found[name], len(row["ranks"]), row.get("infer_s"))}
            for name, row in rows.items()}


def _interval_keys(metric: str, found: dict[str, Any], records: int, infer_s: float | None) -> dict[str, Any]:
    out = {f"{metric}_ci": found["ci"],
           "infer_s_per_1000": None if infer_s is None else 1000.0 * infer_s / max(1, records)}
    if "vs_best" in found:
        versus = found["vs_best"]
        out["vs_best_baseline"] = {"baseline": versus["baseline"], f"{metric}_diff": versus["diff"],
                                   "ci": versus["ci"]}
    return out


def preference_records(sample: dict[str, Any], rows: dict[str, dict[str, Any]], counts) -> dict[str, Any]:
    """The preference sample's columns the slices read: each record's user and item training interactions, and
    the CoReLLa CRM's entropy on it (where that row was scored)."""
    records = {"user_id": [str(u) for u in sample["user_id"]], "item_id": [str(i) for i in sample["item_id"]],
               "label": np.asarray(sample["label"], dtype=np.int64), **_counts_of(sample, counts)}
    if "corella_crm" in rows:
        from raylib.methods.corella.routing import entropy

        records["crm_entropy"] = np.asarray(entropy(np.asarray(rows["corella_crm"]["probabilities"])),
                                            dtype=np.float64)
    return records


def _counts_of(records: dict[str, Any], counts) -> dict[str, np.ndarray]:
    users, items = counts
    return {"user_train_interactions": np.array([users.get(str(u), 0) for u in records["user_id"]], np.int64),
            "item_train_interactions": np.array([items.get(str(i), 0) for i in records["item_id"]], np.int64)}


def training_counts(dataset, valid_from: int) -> tuple[dict[str, int], dict[str, int]]:
    """Each user's and each item's interactions in the training period (before the validation cut)."""
    import pyarrow.compute as pc

    table = dataset.interactions
    early = table.filter(pc.less(table.column("timestamp"), valid_from))

    def counted(column: str) -> dict[str, int]:
        found = pc.value_counts(pc.cast(early.column(column), "string")).to_pylist()
        return {row["values"]: int(row["counts"]) for row in found}

    return counted("user_id"), counted("item_id")


# ------------------------------------------------------------------ the benchmark
def run_bench(config: BenchLeaderboardConfig) -> dict[str, Any]:
    from raylib.bench.nextitem import shown_source
    from raylib.config import ModelConfig
    from raylib.data.dataset import load_dataset, time_cutoffs
    from raylib.model import check_model_available

    start = time.time()
    unknown = sorted(set(config.parts) - {"preference", "ranking"})
    if unknown:
        raise RaylibError(f"leaderboard: parts {unknown} are not parts (preference, ranking).")
    check_model_available(ModelConfig(name=config.model_name))
    jobs = jobs_of(config)
    dataset = load_dataset(config.dataset)
    cutoffs = time_cutoffs(dataset.interactions.column("timestamp").to_numpy(), config.time_split)
    counts = training_counts(dataset, int(cutoffs[0]))
    report: dict[str, Any] = {
        "dataset": config.dataset, "source": shown_source(dataset.source), "model": config.model_name,
        "command": "raylib bench leaderboard",
        "split": {"kind": "time", "fractions": list(config.time_split), "valid_from": int(cutoffs[0]),
                  "test_from": int(cutoffs[1]), "interactions": dataset.interactions.num_rows},
        "recipes": dict(config.recipes), "cold_max_interactions": config.cold_max_interactions,
        # fixed before any test figure: the report is saved with them before the first method runs
        "selection": {method: {"rule": rule} for method, rule in config.selection.items()}}
    path = _report_path(config)
    save(report, path)
    invocation_started(_out(config), started=start)
    slices: dict[str, dict[str, Any]] = {}
    if "preference" in config.parts:
        sample, rows, ctr_sample = preference_scores(config, jobs)
        records = preference_records(sample, rows, counts)
        write_scores(_out(config), "preference", records, {n: r["probabilities"] for n, r in rows.items()})
        report["preference"] = preference_table(sample, rows, config.bootstrap_rounds)
        _add_slices(slices, slice_tables("preference", records, {n: np.asarray(r["probabilities"])
                                                                 for n, r in rows.items()},
                                         config.cold_max_interactions, config.bootstrap_rounds))
        report["split"]["preference_test_records"] = len(sample["label"])
        report["split"]["preference_positive_share"] = float(np.mean(sample["label"]))
        report.update(budget_axis(config, jobs, sample, ctr_sample, report["preference"]))
        report["corella_routing"] = corella_routing(config)
        save(report, path)
    if "ranking" in config.parts:
        windows, rows, records, context = ranking_ranks(config, jobs["nextitem"])
        records.update(_counts_of(records, counts))
        write_scores(_out(config), "ranking", records, {n: r["ranks"] for n, r in rows.items()})
        report["ranking"] = ranking_table(rows, config.bootstrap_rounds)
        ranking_budget_axis(config, context, report["ranking"], report)
        _add_slices(slices, slice_tables("ranking", records, {n: np.asarray(r["ranks"]) for n, r in rows.items()},
                                         config.cold_max_interactions, config.bootstrap_rounds))
        report["split"].update(windows)
    report["slices"] = slices
    report["selection"] = selection_seen(config, report["selection"])
    report["wall_time_s"] = time.time() - start  # this invocation's
    report["time_spent"] = time_spent(_out(config))  # every invocation's into output_dir: the cost from nothing
    report["report_path"] = str(save(report, path))
    log_rows(config, report)
    return report


def budget_axis(config: BenchLeaderboardConfig, jobs: dict[str, Any], sample: dict[str, Any], ctr_sample,
                table: dict[str, Any]) -> dict[str, Any]:
    """`budgets`, `curves` and `wins` (`raylib.bench.leaderboard_budgets`); DCNv2 also at "all" (the table's)."""
    from raylib.bench.leaderboard_budgets import curves, preference_budget_scores, wins

    out: dict[str, Any] = {"budgets": {"preference": list(config.budgets), "ranking": list(config.ranking_budgets)}}
    if not config.budgets:
        return out
    scores = preference_budget_scores(config, jobs, sample, *ctr_sample, run_method, _out(config))
    labels = np.asarray(sample["label"])
    found = curves("preference", labels, scores, config.bootstrap_rounds)
    if "dcnv2" in table:
        found["dcnv2"]["all"] = _all_records(table["dcnv2"], "auc")
    best, paired = wins("preference", labels, scores, config.bootstrap_rounds)
    return {**out, "curves": {"preference": found}, "wins": best, "budget_comparisons": paired}


def ranking_budget_axis(config: BenchLeaderboardConfig, context: dict[str, Any], table: dict[str, Any],
                        report: dict[str, Any]) -> None:
    """`budgets.ranking`, `curves.ranking`, and the ranking rows' `wins`; SASRec and popularity also at "all"."""
    from raylib.bench.leaderboard_budgets import curves, ranking_budget_ranks, wins

    report.setdefault("budgets", {"preference": list(config.budgets)})["ranking"] = list(config.ranking_budgets)
    report.setdefault("curves", {})["ranking"] = {}
    if not config.ranking_budgets:
        return
    ranks = ranking_budget_ranks(config, context["bigrec"], context["genrec"], context["data"], context["reports"],
                                 run_method, _out(config))
    found = curves("ranking", None, ranks, config.bootstrap_rounds)
    for row in ("sasrec", "popularity"):
        if row in table:
            found[row]["all"] = _all_records(table[row], "ndcg@10")
    best, paired = wins("ranking", None, ranks, config.bootstrap_rounds)
    report["curves"]["ranking"] = found
    report.setdefault("wins", {}).update(best)
    report.setdefault("budget_comparisons", {}).update(paired)


def _all_records(row: dict[str, Any], metric: str) -> dict[str, Any]:
    """A classical row of the table as the "all" point of its budget curve (it learned every training record)."""
    return {"mean": row[metric], "ci": row[f"{metric}_ci"], "seeds": [row[metric]],
            "train_records": row["train_records"]}


def corella_routing(config: BenchLeaderboardConfig) -> dict[str, Any]:
    """CoReLLa's routing on its own samples (`changes.corella.data`: validation for the threshold, test for the
    figures), larger than the preference sample: whether routing beat the CRM on validation, and the test AUCs."""
    path = _out(config) / "corella" / "report.json"
    if not path.is_file():
        return {}
    found = json.loads(path.read_text())
    return {"valid_samples": found["valid_samples"], "test_samples": found["test_samples"],
            "routing": found["routing"], "llm_share": found["llm_share"],
            "decision": found["threshold_search"].get("decision"),
            "test_auc": {k: v["auc"] for k, v in found["metrics"].items()},
            "seconds_per_1000": found.get("seconds_per_1000")}


def _add_slices(slices: dict[str, dict[str, Any]], found: dict[str, dict[str, Any]]) -> None:
    for name, rows in found.items():
        slices.setdefault(name, {}).update(rows)


def selection_seen(config: BenchLeaderboardConfig, selection: dict[str, Any]) -> dict[str, Any]:
    """Each rule with the candidates it chose among (read from the methods' own reports, validation only)."""
    def report_of(*parts: str) -> dict[str, Any]:
        path = _out(config).joinpath(*parts, "report.json")
        return json.loads(path.read_text()) if path.is_file() else {}

    seen: dict[str, Any] = {}
    tallrec = report_of("tallrec")
    if tallrec:
        seen["tallrec"] = [f"epoch {h['epoch']}: val_auc {h.get('val_auc')}" for h in
                           tallrec.get("train", {}).get("history", [])]
    corella = report_of("corella")
    if corella:
        search = corella.get("threshold_search", {})
        seen["corella"] = {"trials": search.get("trials"), "bounds": search.get("bounds"),
                           "valid": search.get("valid"), "decision": search.get("decision")}
    nextitem = Path(config.ranking_dir).expanduser().resolve() if config.ranking_dir else _out(config) / "nextitem"
    runs = sorted(p.name for p in nextitem.glob("bigrec-*") if (p / "report.json").is_file())
    if runs:
        seen["bigrec"] = runs
    return {m: {**rule, **({"saw": seen[m]} if m in seen else {})} for m, rule in selection.items()}


def log_rows(config: BenchLeaderboardConfig, report: dict[str, Any]) -> None:
    """Each method's child run gets its leaderboard rows as metrics (its main row's under the plain names, so
    MLflow's compare view lines the methods up on `auc` / `ndcg_at_10`)."""
    from raylib import tracking
    from raylib.methods import methods

    if not config.tracking.enabled:
        return
    rows = {**report.get("preference", {}), **report.get("ranking", {})}
    for method, names in ((m.name, m.leaderboard_rows) for m in methods().values() if m.leaderboard_rows):
        saved = _method_folder(config, method) / tracking.RUN_FILE
        if not saved.is_file() or names[0] not in rows:
            continue
        run = tracking.Run(**json.loads(saved.read_text()))
        shown = {k: v for k, v in rows[names[0]].items() if k in ("auc", "logloss", "accuracy", "ndcg@10", "hr@10")}
        tracking.log_metrics(run, {**shown, **{f"{n}.{k}": v for n in names if n in rows
                                               for k, v in rows[n].items() if not k.endswith("_ci")}})


def _method_folder(config: BenchLeaderboardConfig, method: str) -> Path:
    if method in ("bigrec", "genrec"):
        folder = Path(config.ranking_dir).expanduser().resolve() if config.ranking_dir else _out(config) / "nextitem"
        run = config.bigrec_run if method == "bigrec" else config.genrec_run
        return folder / f"{method}-{run}"
    return _out(config) / method


def _report_path(config: BenchLeaderboardConfig) -> Path:
    from raylib.bench.common import report_path

    return report_path(config.report)
