"""RecCocktail end to end (Hou et al., "RecCocktail", 2025): base spirit + ingredient LoRAs, mixed in weight space.

1. Base spirit: one LoRA on a mixture of every domain (TALLRec records, `raylib.methods.cocktail.domains`), trained once in
   `<output_dir>/base_spirit`; a second target domain finds it finished and reuses it.
2. Ingredient: one LoRA, same shape, on the target domain's few-shot sample (`<output_dir>/<target>/ingredient`).
3. Entropy-guided merge (Sec. 3.3): per-module mixing logits learnt by entropy minimisation on UNLABELLED
   target prompts through the shared trainer (`raylib.methods.cocktail.task`).
4. A Ray Tune + Optuna search of the mix on the LABELLED VALIDATION split (never test): a global base-spirit
   weight plus a bounded shift per group of decoder layers.
5. Evaluation on warm and cold-start test records of: the raw model, each part, the 0.5/0.5 average, the
   entropy mix and the searched mix; each mix is first folded into ONE rank-2r PEFT adapter
   (`raylib.methods.cocktail.merging.fold`, exact) and published under `<output_dir>/<target>/adapters/`.
`CocktailRecipe` runs these as named steps. Every stage caches its result in `output_dir`, so a rerun resumes
where it stopped. Training runs on Ray Train workers; every step that loads weights besides (mixing and folding,
scoring, each Tune trial) runs in a Ray task placed by `raylib.placement`, so the driver loads none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raylib import RaylibError
from raylib.config import TIME_SPLIT, stage_job, to_dict
from raylib.methods.cocktail.config import CocktailJobConfig, MergeJob
from raylib.methods.tallrec.config import TallrecJobConfig
from raylib.methods.cocktail.domains import DomainSplits, load_domain, mixture, three_pools, warm_cold
from raylib.data.records import TallrecRecord, sample_records, stratified_sample
from raylib.methods.base import write_run_report
from raylib.stages import cached_stage
from raylib.train.checkpoint import adapter_sha1
from raylib.assets import PROJECT_DIR

VARIANTS = ("raw", "base", "ingredient", "average", "entropy", "tune")


# ------------------------------------------------------------------ data
def load_domains(job: CocktailJobConfig) -> dict[str, DomainSplits]:
    """Every domain's splits; MovieLens genre domains are disjoint (a record is the first matching domain's)."""
    out, taken = {}, set()
    for d in job.domains:
        out[d.name] = load_domain(d, job.data, PROJECT_DIR, taken)
        taken |= set(d.genres) if d.source == "movielens" else set()
    return out


def lora_stage_job(job: CocktailJobConfig, output_dir: Path) -> TallrecJobConfig:
    """A LoRA stage's TALLRec job. Its records come cut already (each domain at the time split), and its data
    section names no dataset, so it holds the default split, which TALLRec's check allows there."""
    return stage_job(TallrecJobConfig, job, "LoRA stage", output_dir=str(output_dir),
                     data={"time_split": list(TIME_SPLIT)})


def records_key(records: list[TallrecRecord]) -> str:
    digest = hashlib.sha1()
    for r in records:
        digest.update(f"{r.instruction}\x1f{r.input}\x1f{r.output}\n".encode())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------ mixes: build, score, search
def mixed_model(job: CocktailJobConfig, base_dir, ingredient_dir, weights, merge: bool = True):
    """The base model with the mix folded into one adapter (`merge`: and merged into the weights)."""
    from raylib.methods.cocktail.merging import MixedLora, fold, load_two
    from raylib.model import load_model
    from raylib.placement import choose_dtype, device

    here = device()
    model = load_model(job.model, here, choose_dtype(job.eval.dtype, here))
    mixed = MixedLora(load_two(model, base_dir, ingredient_dir))
    mixed.set_weights(weights)
    folded = fold(mixed)
    return (folded.merge_and_unload() if merge else folded), mixed.names


def score(job: CocktailJobConfig, model, records: list[TallrecRecord]) -> np.ndarray:
    from raylib.evaluate import yes_probabilities
    from raylib.model import load_tokenizer

    return yes_probabilities(model, load_tokenizer(job.model), records, job.data.max_length, job.eval.batch_size,
                             scoring=job.eval.scoring, prefix_cache=job.eval.prefix_cache, progress=False)


def auc(records: list[TallrecRecord], probs) -> float:
    from raylib.metrics import binary_report

    return float(binary_report([r.label for r in records], probs)["auc"])


# (split, mix, part): RecCocktail's claims, a merged adapter at least as good as the better part on warm records
# and at least the base spirit on cold-start ones, each tested with a paired bootstrap over the same records
CLAIMS = (("warm", "entropy", "base"), ("warm", "entropy", "ingredient"), ("warm", "tune", "base"),
          ("warm", "tune", "ingredient"), ("cold", "entropy", "base"), ("cold", "entropy", "ingredient"),
          ("cold", "tune", "base"))


def comparisons(records: dict[str, list[TallrecRecord]], scores: dict[str, dict[str, list[float]]],
                rounds: int = 1000) -> dict[str, dict[str, Any]]:
    """AUC of a mix minus a part's on the same records, with a 95% paired bootstrap interval, per claim."""
    from raylib.metrics import auc as auc_of, paired_bootstrap

    out = {}
    for split, mix, part in CLAIMS:
        labels = [r.label for r in records[split]]
        out[f"{split}/{mix}_vs_{part}"] = paired_bootstrap(scores[mix][split], scores[part][split], auc_of,
                                                           labels=labels, rounds=rounds)
    return out


def module_names(job: CocktailJobConfig, base_dir, ingredient_dir) -> list[str]:
    """The LoRA modules the mix weighs, in model order (`MixedLora.names`), from the model built on the meta
    device: no weights are read."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from raylib.methods.cocktail.merging import ADAPTERS, check_compatible, lora_modules
    from raylib.model import resolve_model_path

    check_compatible(base_dir, ingredient_dir)
    config = AutoConfig.from_pretrained(resolve_model_path(job.model.name),
                                        trust_remote_code=job.model.trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=job.model.trust_remote_code)
    peft_model = get_peft_model(model, LoraConfig.from_pretrained(str(base_dir)), adapter_name=ADAPTERS[0])
    peft_model.add_adapter(ADAPTERS[1], LoraConfig.from_pretrained(str(ingredient_dir)))
    return list(lora_modules(peft_model))


def searched_weights(names: list[str], params: dict[str, float], groups: int, layers: int) -> torch.Tensor:
    """[modules, 2]: base-spirit weight = clip(global + shift of the module's layer group, 0, 1)."""
    from raylib.methods.cocktail.merging import layer_weights

    per_layer = {}
    for layer in range(layers):
        group = min(groups - 1, layer * groups // max(layers, 1))
        per_layer[layer] = float(np.clip(params["global"] + params.get(f"group{group}", 0.0), 0.0, 1.0))
    return layer_weights(names, params["global"], per_layer)


def valid_auc_of_mix(params: dict[str, float], job: CocktailJobConfig | None = None, base_dir: str = "",
                     ingredient_dir: str = "", names: list | None = None, groups: int = 0, layers: int = 0,
                     valid: list | None = None, threads: int = 0) -> dict[str, float]:
    """One Tune trial: the mix's AUC on the LABELLED VALIDATION records (the only labels the search sees). It
    asks for the job's placement (`raylib.placement`): a GPU when the job uses GPUs."""
    if threads:
        torch.set_num_threads(threads)
    records = [TallrecRecord(**r) for r in valid]
    model, _ = mixed_model(job, base_dir, ingredient_dir, searched_weights(names, params, groups, layers))
    return {"auc": auc(records, score(job, model, records))}


def tune_mix(job: CocktailJobConfig, base_dir: Path, ingredient_dir: Path, valid: list[TallrecRecord],
             folder: Path) -> dict[str, Any]:
    """Ray Tune + OptunaSearch over the global weight and per-layer-group shifts, on validation AUC."""
    from transformers import AutoConfig

    from raylib import placement
    from raylib.model import resolve_model_path
    from raylib.tune import search

    names = module_names(job, base_dir, ingredient_dir)
    layers = int(AutoConfig.from_pretrained(resolve_model_path(job.model.name),
                                            trust_remote_code=job.model.trust_remote_code).num_hidden_layers)
    groups = job.merge.layer_groups if job.merge.per_layer else 0
    space = job.tune.space or {"global": {"type": "uniform", "low": 0.0, "high": 1.0},
                               **{f"group{g}": {"type": "uniform", "low": -0.25, "high": 0.25} for g in range(groups)}}
    where = placement.for_job(job)
    threads = where.resolved_cpus()
    key = "-".join([adapter_sha1(base_dir)[:6], adapter_sha1(ingredient_dir)[:6], records_key(valid)[:6]])
    found = search(valid_auc_of_mix, space, metric="auc", mode="max", settings=job.tune, output_dir=folder,
                   study_name=f"mix-{key}", resources=where.tune_resources(),
                   constants={"job": job, "base_dir": str(base_dir), "ingredient_dir": str(ingredient_dir),
                              "names": names, "groups": max(groups, 1), "layers": layers,
                              "valid": [r.__dict__ for r in valid], "threads": threads})
    found["weights"] = searched_weights(names, found["best_params"], max(groups, 1), layers).tolist()
    return found


# ------------------------------------------------------------------ the pipeline
def base_spirit_inputs(job: CocktailJobConfig, domains: dict[str, DomainSplits]):
    """(stage job, training records, validation records) of the base spirit: nothing in them depends on the
    target, so every target of the same domains finds the same finished run in `<output_dir>/base_spirit`."""
    seed = job.data.seed
    train = mixture(list(domains.values()), job.base_samples, seed)
    per_valid = max(2, job.data.valid_samples // len(domains))
    valid = [r for d in domains.values() for r in stratified_sample(d.valid, per_valid, seed)]
    return lora_stage_job(job, Path(job.output_dir).expanduser().resolve() / "base_spirit"), train, valid


@dataclasses.dataclass
class CocktailInputs:
    """Every data set of a RecCocktail run, made before any training (`cocktail_inputs`)."""
    base_job: TallrecJobConfig
    base_train: list[TallrecRecord]
    base_valid: list[TallrecRecord]
    pools: Any  # the target's training pool in three parts (`three_pools`)
    ingredient_train: list[TallrecRecord]
    valid: list[TallrecRecord]
    prompts: list[TallrecRecord]  # the entropy merge's unlabelled prompts
    held_out: list[TallrecRecord]  # and its held-out ones
    warm: list[TallrecRecord]
    cold: list[TallrecRecord]


def cocktail_inputs(job: CocktailJobConfig, domains: dict[str, DomainSplits]) -> CocktailInputs:
    """The base spirit's records, the target's disjoint pools and samples (records with their text; the pools
    and splits stay columns where built from interactions), the unlabelled prompts and the warm / cold test
    records. Bad or too small inputs stop here, before any training."""
    seed, target = job.data.seed, domains[job.target]
    base_job, base_train, base_valid = base_spirit_inputs(job, domains)
    pools = three_pools(target.train, seed)  # base spirit / ingredient / unlabelled: disjoint parts
    ingredient_train = list(sample_records(pools.ingredient, job.data.train_samples, seed))
    valid = list(stratified_sample(target.valid, job.data.valid_samples, seed))
    unlabelled = list(sample_records(pools.unlabelled, job.merge.unlabelled_prompts + job.merge.held_out_prompts,
                                     seed + 7))
    if len(unlabelled) < 2:
        raise RaylibError(f"No unlabelled {job.target} prompts for the entropy merge: the third of the training "
                          f"pool kept for them has {len(pools.unlabelled)} records (bring more records).")
    # cold start: target items neither adapter trained on
    warm, cold = (list(part) for part in warm_cold(target.test, ingredient_train + base_train,
                                                   job.warm_cold_samples, seed))
    if not warm or not cold:
        raise RaylibError(f"The {job.target} test split has {len(warm)} warm and {len(cold)} cold-start records; "
                          "both are needed (more test users: data.test_fraction).")
    return CocktailInputs(base_job, base_train, base_valid, pools, ingredient_train, valid,
                          unlabelled[:job.merge.unlabelled_prompts], unlabelled[job.merge.unlabelled_prompts:],
                          warm, cold)


@dataclasses.dataclass(frozen=True)
class Mixes:
    """The entropy merge's and the search's outcome: the module names and each mix's [modules, 2] weights."""
    names: list[str]
    weights: dict[str, torch.Tensor]  # average, entropy, tune
    merged: Any  # the entropy merge's training result (its history, best epoch)
    tuned: dict[str, Any]  # the Tune search's summary


class CocktailRecipe:
    """RecCocktail's job as named steps; `run` is the table of contents. Every step caches what it makes under
    `output_dir`, so a rerun resumes where it stopped."""

    def __init__(self, job: CocktailJobConfig):
        self.job = job
        self.output = Path(job.output_dir).expanduser().resolve()
        self.folder = self.output / job.target  # the target domain's stages, mixes and report

    def run(self) -> dict[str, Any]:
        start = time.time()
        domains = self.load_domains()
        inputs = cocktail_inputs(self.job, domains)  # every data set first: bad inputs stop before training
        base = self.train_base_spirit(inputs, domains)
        ingredient = self.train_ingredient(inputs)
        base_dir, ingredient_dir = Path(base.published_dir), Path(ingredient.published_dir)
        mixes = self.mix(inputs, base_dir, ingredient_dir)
        self.fold_mixes(base_dir, ingredient_dir, mixes)
        scores = self.score_variants(inputs, base_dir, ingredient_dir)
        return self.write_report(domains, inputs, base, ingredient, mixes, scores, start)

    def load_domains(self) -> dict[str, DomainSplits]:
        domains = load_domains(self.job)
        for d in domains.values():
            print(f"[cocktail] domain {d.name}: {len(d.train)} train / {len(d.valid)} valid / {len(d.test)} test "
                  f"records (split by {d.split}), from {d.source}", flush=True)
        return domains

    # ---------------------------------------------------------------- the two LoRAs
    def train_base_spirit(self, inputs: CocktailInputs, domains: dict[str, DomainSplits]):
        """The base spirit: one LoRA on every domain's mixture, target-independent (`base_spirit_inputs`)."""
        from raylib.methods.tallrec.task import TallrecTask
        from raylib.train.driver import train

        print(f"[cocktail] base spirit: {len(inputs.base_train)} records from {sorted(domains)} ...", flush=True)
        return train(TallrecTask, inputs.base_job, inputs.base_train, inputs.base_valid)

    def train_ingredient(self, inputs: CocktailInputs):
        """The ingredient: one LoRA of the same shape on the target domain's few-shot sample."""
        from raylib.methods.tallrec.task import TallrecTask
        from raylib.train.driver import train

        print(f"[cocktail] ingredient: {len(inputs.ingredient_train)} {self.job.target} records ...", flush=True)
        return train(TallrecTask, lora_stage_job(self.job, self.folder / "ingredient"), inputs.ingredient_train,
                     inputs.valid)

    # ---------------------------------------------------------------- the mixes
    def mix(self, inputs: CocktailInputs, base_dir: Path, ingredient_dir: Path) -> Mixes:
        """The entropy merge on unlabelled target prompts (Sec. 3.3), then the mix searched on labelled
        validation records (Ray Tune + Optuna, cached), beside the plain 0.5/0.5 average."""
        from raylib.methods.cocktail.merging import check_compatible

        check_compatible(base_dir, ingredient_dir)
        job = self.job
        names, entropy_weights, merged = entropy_merge(job, base_dir, ingredient_dir, inputs.prompts,
                                                       inputs.held_out, self.folder)
        print(f"[cocktail] Tune search of the mix on {len(inputs.valid)} validation records ...", flush=True)
        key = {"base": adapter_sha1(base_dir), "ingredient": adapter_sha1(ingredient_dir),
               "valid": records_key(inputs.valid), "tune": to_dict(job.tune), "merge": to_dict(job.merge),
               "model": to_dict(job.model)}
        tuned = cached_stage(self.folder / "stages" / "tune.json", key,
                             lambda: tune_mix(job, base_dir, ingredient_dir, inputs.valid, self.folder))
        weights = {"average": torch.full((len(names), 2), 0.5), "entropy": entropy_weights,
                   "tune": torch.tensor(tuned["weights"])}
        return Mixes(names, weights, merged, tuned)

    def fold_mixes(self, base_dir: Path, ingredient_dir: Path, mixes: Mixes) -> None:
        """Every mix folded into ONE PEFT adapter (exact) and published under `<target>/adapters/<mix>`."""
        publish_mixes(self.job, self.folder, base_dir, ingredient_dir, mixes.names, mixes.weights)

    # ---------------------------------------------------------------- scores and the report
    def score_variants(self, inputs: CocktailInputs, base_dir: Path, ingredient_dir: Path) -> dict[str, Any]:
        """Every variant (the raw model, each part, each published mix) on the warm, cold and validation
        records, each cached under its adapter's hash and the records."""
        warm, cold, valid = inputs.warm, inputs.cold, inputs.valid
        scores = {}
        for variant in VARIANTS:
            adapter = {"raw": None, "base": base_dir, "ingredient": ingredient_dir}.get(
                variant, self.folder / "adapters" / variant)
            key = {"adapter": adapter_sha1(adapter) if adapter else "raw", "warm": records_key(warm),
                   "cold": records_key(cold), "valid": records_key(valid), "eval": to_dict(self.job.eval)}
            scores[variant] = cached_stage(self.folder / "stages" / f"scores_{variant}.json", key,
                                           lambda a=adapter, v=variant: _score_variant(self.job, a, v, warm, cold,
                                                                                       valid))
        return scores

    def write_report(self, domains, inputs: CocktailInputs, base, ingredient, mixes: Mixes,
                     scores: dict[str, Any], start: float) -> dict[str, Any]:
        """AUC of every variant on warm / cold / validation records, the paper's claims with paired intervals,
        what each part learnt from; written as `<target>/report.json`."""
        warm, cold, valid, pools = inputs.warm, inputs.cold, inputs.valid, inputs.pools
        entropy_weights = mixes.weights["entropy"]
        report = {
            "target_domain": self.job.target,
            "warm": {v: auc(warm, scores[v]["warm"]) for v in VARIANTS},
            "cold": {v: auc(cold, scores[v]["cold"]) for v in VARIANTS},
            "valid": {v: auc(valid, scores[v]["valid"]) for v in VARIANTS},
            "comparisons": comparisons({"warm": warm, "cold": cold}, scores),
            "records": {"warm": len(warm), "cold": len(cold), "valid": len(valid),
                        "base_train": len(inputs.base_train), "ingredient_train": len(inputs.ingredient_train),
                        "unlabelled": len(inputs.prompts), "held_out": len(inputs.held_out),
                        "target_pools": {"base": len(pools.base), "ingredient": len(pools.ingredient),
                                         "unlabelled": len(pools.unlabelled)}},
            "domains": {d.name: {"train": len(d.train), "valid": len(d.valid), "test": len(d.test),
                                 "split": d.split, "source": d.source} for d in domains.values()},
            "entropy_merge": {"history": mixes.merged.state.history, "best_epoch": mixes.merged.state.best_epoch,
                              "base_weight_mean": float(entropy_weights[:, 0].mean()),
                              "base_weight_range": [float(entropy_weights[:, 0].min()),
                                                    float(entropy_weights[:, 0].max())]},
            "tune": {k: mixes.tuned[k] for k in ("best_params", "best_value", "trials", "study_trials", "storage")},
            "train": {"base": base.state.history, "ingredient": ingredient.state.history},
            "adapters": {v: str((self.folder / "adapters" / v).relative_to(self.output)) for v in mixes.weights},
            "wall_time_s": time.time() - start,
        }
        write_run_report("cocktail", self.folder, self.job, report)
        return report


def run_cocktail(job: CocktailJobConfig) -> dict[str, Any]:
    """The whole RecCocktail job (`CocktailRecipe`)."""
    return CocktailRecipe(job).run()


def entropy_merge(job: CocktailJobConfig, base_dir: Path, ingredient_dir: Path, prompts, held_out, folder: Path):
    """RecCocktail's entropy-guided merge of two LoRAs (the `EntropyMergeTask` through the shared trainer, in
    `<folder>/entropy_merge`) on unlabelled target prompts: (module names, their [modules, 2] weights, the
    trainer's result)."""
    from raylib.methods.cocktail.task import EntropyMergeTask, read_published
    from raylib.train.driver import train

    m = job.merge
    merge_job = stage_job(MergeJob, job, "entropy merge", output_dir=str(folder / "entropy_merge"),
                          base_adapter=str(base_dir), ingredient_adapter=str(ingredient_dir),
                          train={"epochs": m.epochs, "batch_size": m.batch_size, "micro_batch_size": m.batch_size,
                                 "learning_rate": m.learning_rate, "patience": 0, "warmup_steps": 0,
                                 "weight_decay": 0.0, "zero_stage": 0})
    print(f"[cocktail] entropy merge on {len(prompts)} unlabelled prompts ({m.epochs} epochs) ...", flush=True)
    merged = train(EntropyMergeTask, merge_job, prompts, held_out or prompts)
    names, weights = read_published(Path(merged.published_dir))
    return names, weights, merged


def publish_mixes(job: CocktailJobConfig, folder: Path, base_dir: Path, ingredient_dir: Path, names: list[str],
                  weights: dict[str, torch.Tensor]) -> None:
    """Each mix (name -> [modules, 2] weights) folded and published as `<folder>/adapters/<name>`, in one placed
    Ray task (it loads the base model); a published mix of the same weights and adapters is kept, another is
    redone."""
    from raylib import placement
    from raylib.methods.cocktail.merging import coefficients_doc, same_mix

    hashes = {"base": adapter_sha1(base_dir), "ingredient": adapter_sha1(ingredient_dir)}
    docs = {name: coefficients_doc(names, w, variant=name, **hashes) for name, w in weights.items()}
    redo = {name: doc for name, doc in docs.items() if not same_mix(folder / "adapters" / name, doc)}
    if redo:
        todo = {name: (weights[name].tolist(), str(folder / "adapters" / name), doc) for name, doc in redo.items()}
        placement.run(fold_and_publish, job, str(base_dir), str(ingredient_dir), todo,
                      placement=placement.for_job(job))


def fold_and_publish(job: CocktailJobConfig, base_dir: str, ingredient_dir: str,
                     mixes: dict[str, tuple[list, str, dict[str, Any]]]) -> None:
    """Each mix (name -> (weights [modules, 2], target folder, coefficients doc)) folded into one adapter and
    published (runs where it is placed: it loads the base model)."""
    from raylib.methods.cocktail.merging import save_folded

    for name, (weights, target, doc) in mixes.items():
        peft_model, _ = mixed_model(job, base_dir, ingredient_dir, torch.tensor(weights), merge=False)
        save_folded(peft_model, "cocktail", Path(target), coefficients=doc)


def _score_variant(job: CocktailJobConfig, adapter, variant: str, warm, cold, valid) -> dict[str, list[float]]:
    """P(Yes) of the warm, cold and validation records with the base model + `adapter` merged (or none), scored
    as TALLRec's job scores (`raylib.methods.tallrec.pipeline.score_on_ray`: the job's `eval` settings, in a placed Ray task)."""
    from raylib.methods.tallrec.pipeline import score_on_ray

    print(f"[cocktail] scoring {variant}: {len(warm)} warm + {len(cold)} cold + {len(valid)} valid ...", flush=True)
    probs = np.asarray(score_on_ray(job, warm + cold + valid, adapter and str(adapter))["probabilities"])
    return {"warm": probs[:len(warm)].tolist(), "cold": probs[len(warm):len(warm) + len(cold)].tolist(),
            "valid": probs[len(warm) + len(cold):].tolist()}


def summary_table(report: dict[str, Any]) -> str:
    lines = [f"target {report['target_domain']}: AUC on {report['records']['warm']} warm / "
             f"{report['records']['cold']} cold-start test records ({report['records']['valid']} validation)",
             f"{'':<12}{'warm':>8}{'cold':>8}{'valid':>8}"]
    for v in VARIANTS:
        lines.append(f"{v:<12}{report['warm'][v]:>8.4f}{report['cold'][v]:>8.4f}{report['valid'][v]:>8.4f}")
    for claim, found in report.get("comparisons", {}).items():
        lo, hi = found["ci"]
        lines.append(f"{claim:<28} AUC {found['diff']:+.4f} [{lo:+.4f}, {hi:+.4f}] (95% paired bootstrap)")
    return "\n".join(lines)

