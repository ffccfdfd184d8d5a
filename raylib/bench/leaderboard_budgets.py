"""The leaderboard's data-budget axis: an LLM row and its classical counterpart trained on the same N records.

TALLRec's paper trains its baselines on the same 16 / 64 / 256 samples as the LLM; the leaderboard's main table
does not (DCNv2 learns every training rating). Here, per seed and budget N, TALLRec learns a seeded sample of N
preference records (`data.train_seed`; the validation and test samples stay the leaderboard's; at the table's own
N and seed, the table's run is the point) and DCNv2 learns the CTR rows of exactly those (user, item) pairs, with a
vocabulary of what those rows hold (an id they never show is out of vocabulary, as it would be for a model that
saw only them). On the same records (`budget_rows`): RecCocktail, the table's base spirit mixed by entropy with
TALLRec's adapter as the ingredient (`CocktailBudget`), and CoReLLa's LLM, its two LLM stages on those CTR rows
from the point's DCNv2 (`corella_llm_at`). All score the leaderboard's preference sample.

Ranking: BIGRec and GenRec tuned on N training windows (their jobs' seeded sample, one seed: it also draws the
test windows), SASRec trained on exactly those windows and popularity counted on them (BIGRec's paper: 1024).

From the per-seed scores: `curves` (the mean over seeds, a bootstrap interval over the test records of that mean,
each seed's figure) and `wins` (the largest budget where the LLM row beats its counterpart with a paired interval
above 0, or None).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from raylib import RaylibError
from raylib.config import to_dict

# each LLM row and the classical row it is compared with at a budget
COUNTERPARTS = {"tallrec": "dcnv2", "cocktail": "dcnv2", "corella_llm": "dcnv2"}
BUDGET_ROWS = ("tallrec", "cocktail", "corella_llm")  # the LLM rows a budget point can train


def budget_folder(out: Path, n: int, seed: int) -> Path:
    return out / "budgets" / f"n{n}-seed{seed}"


def preference_budget_scores(config, jobs: dict[str, Any], sample: dict[str, Any], ctr, sample_rows, run_method,
                             out: Path):
    """{row: {N: [each seed's probabilities on the sample]}} for DCNv2 and each of `config.budget_rows` at every
    budget, all on the same N records per seed. `ctr`: the CTR data of the leaderboard's dataset; `sample_rows`:
    the sample's CTR test rows (what DCNv2 and CoReLLa score)."""
    rows = config.budget_rows
    scores: dict[str, dict[int, list]] = {row: {} for row in ("dcnv2", *rows)}
    cocktail = CocktailBudget(jobs["cocktail"], jobs["tallrec"], sample) if "cocktail" in rows else None
    for n in config.budgets:
        for seed in config.budget_seeds:
            folder = budget_folder(out, n, seed)
            tallrec = tallrec_at(config, jobs["tallrec"], n, seed, sample, folder, run_method)
            rows_n = ctr.train.take(rows_of(ctr.train, tallrec["pairs"], "training"))  # the CTR rows of its records
            crm = dcnv2_scores(jobs["corella"], ctr, rows_n, sample, sample_rows, folder)
            found = {"dcnv2": crm["probabilities"], "tallrec": tallrec["probabilities"]}
            if cocktail is not None:
                found["cocktail"] = cocktail.at(Path(tallrec["adapter"]), folder)
            if "corella_llm" in rows:
                found["corella_llm"] = corella_llm_at(jobs["corella"], ctr, rows_n, crm, sample, sample_rows, folder)
            for row, probabilities in found.items():
                scores[row].setdefault(n, []).append(probabilities)
    return scores


def tallrec_at(config, main_job, n: int, seed: int, sample: dict[str, Any], folder: Path, run_method):
    """TALLRec on N records drawn with `seed` (the leaderboard's validation and test samples): {probabilities on
    the sample, pairs: the (user, item) pairs it learned, adapter: its published adapter}."""
    import json

    from raylib.config import from_dict
    from raylib.methods.tallrec.config import TallrecJobConfig
    from raylib.methods.tallrec.pipeline import load_tallrec_data, run_tallrec

    main_seed = main_job.data.seed if main_job.data.train_seed is None else main_job.data.train_seed
    if n == main_job.data.train_samples and seed == main_seed:  # the table's own run is this point
        job, outcome = main_job, run_method(config, "tallrec", main_job, run_tallrec)
    else:
        values = to_dict(main_job)
        values.update(output_dir=str(folder / "tallrec"), skip_zero_shot=True,
                      data={**values["data"], "train_samples": n, "train_seed": seed})
        job = from_dict(TallrecJobConfig, values, where=f"leaderboard budget {n}, seed {seed}")
        outcome = run_method(config, f"budget-tallrec-n{n}-seed{seed}", job, run_tallrec)
    scored = json.loads(Path(outcome["report"]["test_scores"]).read_text())
    if scored["user_id"] != sample["user_id"] or scored["item_id"] != sample["item_id"]:
        raise RaylibError(f"leaderboard: TALLRec at budget {n} scored other test records than the sample.")
    train = load_tallrec_data(job.data).train
    return {"probabilities": scored["tuned"], "pairs": [(str(r.user_id), str(r.item_id)) for r in train],
            "adapter": outcome["report"]["adapter_dir"]}


def dcnv2_scores(corella_job, ctr, rows, sample: dict[str, Any], sample_rows, folder: Path,
                 item_text: Path | None = None) -> dict[str, Any]:
    """DCNv2 (CoReLLa's stage-1 recipe) trained in `folder` on the CTR `rows`, with a vocabulary of what they
    show (anything else is out of vocabulary) and, given `item_text`, the items' LLM title vectors as a field:
    {probabilities on the sample's CTR rows, seconds, crm_dir}. Kept under the model's weights and the sample."""
    import time

    from raylib import placement
    from raylib.data.ctr import CtrVocab
    from raylib.methods.corella.pipeline import CorellaRecipe, CorellaViews, crm_scores_of
    from raylib.stages import cached_stage, file_sha1

    vocab = CtrVocab.build(rows, ctr.features)
    views = CorellaViews(vocab=vocab, source=ctr.source, crm_train=rows, crm_valid=ctr.valid, joint_train=[],
                         llm_train=[], stage_valid=[], valid=[], test=[], full_test=ctr.test)
    job = dataclasses.replace(corella_job, output_dir=str(folder / "dcnv2"))
    crm_dir = CorellaRecipe(job).train_crm(views, item_text)

    def score() -> dict[str, Any]:
        start = time.perf_counter()
        found = placement.run(crm_scores_of, str(crm_dir), vocab.records(sample_rows),
                              placement=placement.for_job(job))
        return {"probabilities": np.asarray(found).tolist(), "seconds": time.perf_counter() - start}

    key = {"crm": file_sha1(crm_dir / "model.safetensors"), "sample": sample}
    return {**cached_stage(folder / "dcnv2_scores.json", key, score), "crm_dir": str(crm_dir)}


class CocktailBudget:
    """RecCocktail at a budget: the table's base spirit and, as its ingredient, TALLRec's adapter on the same N
    records (RecCocktail's CPU recipe trains its ingredient with TALLRec's recipe), mixed by the entropy merge on
    the table's unlabelled target prompts (unlabelled data is not part of the labelled budget), scored on the
    sample. The inputs and the sample's records are made once, for every point."""

    def __init__(self, job, tallrec_job, sample: dict[str, Any]):
        from raylib.methods.cocktail.pipeline import cocktail_inputs, load_domains
        from raylib.methods.tallrec.task import TallrecTask
        from raylib.train.driver import finished_result

        self.job, self.tallrec_job, self.sample, self._records = job, tallrec_job, sample, None
        self.inputs = cocktail_inputs(job, load_domains(job))
        base = finished_result(TallrecTask, self.inputs.base_job, self.inputs.base_train, self.inputs.base_valid)
        if base is None:
            raise RaylibError("leaderboard: RecCocktail's budget points need the table's finished base spirit.")
        self.base_dir = Path(base.published_dir)

    def at(self, ingredient: Path, folder: Path) -> list[float]:
        from raylib.methods.cocktail.pipeline import entropy_merge, publish_mixes
        from raylib.methods.tallrec.pipeline import score_on_ray
        from raylib.stages import cached_stage
        from raylib.train.checkpoint import adapter_sha1

        job = dataclasses.replace(self.job, output_dir=str(folder / "cocktail"))
        out = Path(job.output_dir).expanduser().resolve()
        names, weights, _ = entropy_merge(job, self.base_dir, ingredient, self.inputs.prompts, self.inputs.held_out,
                                          out)
        publish_mixes(job, out, self.base_dir, ingredient, names, {"entropy": weights})
        adapter = out / "adapters" / "entropy"
        key = {"adapter": adapter_sha1(adapter), "sample": self.sample, "eval": to_dict(job.eval)}
        return cached_stage(out / "scores.json", key, lambda: {"probabilities": score_on_ray(
            job, self.records(), str(adapter))["probabilities"]})["probabilities"]

    def records(self):
        from raylib.methods.tallrec.pipeline import load_tallrec_data

        if self._records is None:  # TALLRec's test sample (the shared one): made once, when a point is scored
            self._records = load_tallrec_data(self.tallrec_job.data).test
        return self._records


def corella_llm_at(corella_job, ctr, rows, crm: dict[str, Any], sample: dict[str, Any], sample_rows,
                   folder: Path) -> list[float]:
    """CoReLLa's LLM at a budget: the recipe's two LLM stages (joint with the CRM and alignment, then the LLM
    alone) on the N CTR rows the budget's DCNv2 learned, from that DCNv2 (`crm`), as the recipe runs on a
    table of N rows (both stages learn all of them); its P(like) on the sample's CTR rows."""
    from raylib import placement
    from raylib.methods.corella.artifacts import RoutedScorer
    from raylib.methods.corella.pipeline import CorellaRecipe, prepare_views
    from raylib.stages import cached_stage, file_sha1

    crm_dir = Path(crm["crm_dir"])
    job = dataclasses.replace(corella_job, output_dir=str(folder / "corella"))
    recipe, views = CorellaRecipe(job), prepare_views(job, dataclasses.replace(ctr, train=rows))
    llm = recipe.train_llm(views, recipe.train_joint(views, crm_dir))

    def score() -> dict[str, Any]:
        records = views.vocab.records(sample_rows, with_text=True)
        # the scorer's CRM is stage 1's (it has the vocabulary); only the LLM's answers are read
        with placement.start(RoutedScorer, crm_dir, llm / "adapter", job, placement=placement.for_job(job)) as scorer:
            return {"probabilities": scorer.call("both_scores", records)["llm"]}

    key = {"adapter": file_sha1(llm / "adapter" / "adapter_model.safetensors"), "sample": sample}
    return cached_stage(folder / "corella_llm_scores.json", key, score)["probabilities"]


def rows_of(table, pairs: list[tuple[str, str]], split: str) -> np.ndarray:
    """Each (user, item) pair's first row in a CTR table (the same interaction the preference record holds),
    found by an Arrow join: the table's rows stay columns, whatever their number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = pa.table({"user_id": pc.cast(pa.array(table.user_ids()), pa.string()),
                    "item_id": pc.cast(pa.array(table.item_ids()), pa.string()),
                    "row": pa.array(np.arange(table.num_rows, dtype=np.int64))})
    first = ids.group_by(["user_id", "item_id"]).aggregate([("row", "min")])
    wanted = pa.table({"user_id": pa.array([str(u) for u, _ in pairs], pa.string()),
                       "item_id": pa.array([str(i) for _, i in pairs], pa.string()),
                       "at": pa.array(np.arange(len(pairs), dtype=np.int64))})
    found = wanted.join(first, ["user_id", "item_id"], join_type="left outer").sort_by("at")
    rows = found.column("row_min")
    if rows.null_count:
        missing = [pairs[k] for k in found.column("at").filter(pc.is_null(rows)).to_pylist()]
        raise RaylibError(f"leaderboard: {len(missing)} {split} pairs have no CTR row, e.g. {missing[0]}.")
    return rows.to_numpy()


# ------------------------------------------------------------------ next-item ranking
def ranking_budget_ranks(config, bigrec, genrec, data, reports: dict[str, Any], run_method, out: Path):
    """{row: {N: [test ranks]}}: BIGRec and GenRec tuned on N training windows (their job's seeded sample; at the
    table's N, the table's own runs), SASRec trained on exactly those windows and popularity counted on them."""
    from raylib.config import from_dict
    from raylib.data.sequences import sample_windows
    from raylib.methods.nextitem.grounding import popularity_ranks
    from raylib.methods.nextitem.pipeline import run_bigrec, run_genrec, sasrec_ranks, seen_of, targets_of

    if bigrec.data.train_samples != genrec.data.train_samples or bigrec.data.seed != genrec.data.seed:
        raise RaylibError("leaderboard: ranking budgets need BIGRec and GenRec to sample their windows alike "
                          "(data.train_samples and data.seed).")
    targets, seen = targets_of(data.test, data), seen_of(bigrec, data.test, data)
    ranks: dict[str, dict[int, list]] = {"bigrec": {}, "genrec": {}, "sasrec": {}, "popularity": {}}
    for n in config.ranking_budgets:
        folder = out / "budgets" / f"windows-n{n}"
        for name, job, run, key in (("bigrec", bigrec, run_bigrec, "bigrec"),
                                    ("genrec", genrec, run_genrec, "genrec_exact")):
            report = reports[name]
            if n != job.data.train_samples:
                values = to_dict(job)
                values.update(output_dir=str(folder / name), baselines=False,
                              data={**values["data"], "train_samples": n})
                budget_job = from_dict(type(job), values, where=f"leaderboard {name} on {n} windows")
                report = run_method(config, f"budget-{name}-n{n}", budget_job, lambda j, r=run: r(j, data))["report"]
            ranks[name][n] = [np.asarray(report["ranks"][key])]
        windows = sample_windows(data.train, n, bigrec.data.seed)  # the windows both LLMs learned
        ranks["sasrec"][n] = [sasrec_ranks(bigrec, data, windows, folder / "sasrec")[0]]
        counts = np.bincount(windows.targets, minlength=len(data.catalogue))
        ranks["popularity"][n] = [popularity_ranks(counts, targets, seen)]
    return ranks


# ------------------------------------------------------------------ curves and wins
RANKING_COUNTERPARTS = {"bigrec": "sasrec", "genrec": "sasrec"}


def _statistic(part: str):
    """(per-record values of a row's scores, the statistic of a [records, seeds] matrix): the AUC averaged over
    seeds for preference, NDCG@10 averaged over windows and seeds for ranking."""
    from raylib.metrics import ndcg_gains

    if part == "preference":
        return (lambda scores: np.asarray(scores, dtype=np.float64)), _auc_over_seeds
    return (lambda ranks: ndcg_gains(np.asarray(ranks, dtype=np.int64), 10)), np.mean


def _auc_over_seeds(labels, scores):
    from raylib.metrics import auc

    return float(np.mean([auc(labels, scores[:, k]) for k in range(scores.shape[1])]))


def curves(part: str, labels, scores: dict[str, dict[int, list]], rounds: int) -> dict[str, dict[str, Any]]:
    """`curves.<part>.<row>.<N>` = {mean, ci, seeds}: the metric averaged over seeds, its bootstrap interval over
    the test records (the same resample for every seed), and each seed's figure. `labels`: the preference
    records' (None for ranking)."""
    from raylib.metrics import bootstrap_interval

    values, statistic = _statistic(part)
    out: dict[str, dict[str, Any]] = {}
    for row, by_budget in scores.items():
        for n, per_seed in by_budget.items():
            stacked = np.column_stack([values(s) for s in per_seed])
            figure = (lambda m: statistic(labels, m)) if part == "preference" else statistic
            out.setdefault(row, {})[str(n)] = {
                "mean": float(figure(stacked)),
                "ci": bootstrap_interval(stacked, statistic, labels, rounds),
                "seeds": [float(figure(stacked[:, [k]])) for k in range(stacked.shape[1])]}
    return out


def wins(part: str, labels, scores: dict[str, dict[int, list]], rounds: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`wins.<row>`: the largest budget where the row beats its counterpart with a paired bootstrap interval
    above 0, or None; the paired difference at every budget, per row)."""
    from raylib.metrics import paired_bootstrap

    values, statistic = _statistic(part)
    best: dict[str, Any] = {}
    detail: dict[str, Any] = {}
    for row, other in (COUNTERPARTS if part == "preference" else RANKING_COUNTERPARTS).items():
        if row not in scores or other not in scores:
            continue
        paired = {}
        for n in sorted(set(scores[row]) & set(scores[other])):
            a, b = (np.column_stack([values(s) for s in scores[r][n]]) for r in (row, other))
            found = paired_bootstrap(a, b, statistic, labels, rounds)
            paired[str(n)] = {"diff": found["diff"], "ci": found["ci"]}
        beaten = [int(n) for n, found in paired.items() if found["ci"][0] > 0]
        best[row] = max(beaten) if beaten else None
        detail[row] = {"vs": other, "paired": paired}
    return best, detail
