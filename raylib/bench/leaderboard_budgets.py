"""The leaderboard's data-budget axis: an LLM row and its classical counterpart trained on the same N records.

TALLRec's paper trains its baselines on the same 16 / 64 / 256 samples as the LLM; the leaderboard's main table
does not (DCNv2 learns every training rating). Here, per seed and budget N, TALLRec learns a seeded sample of N
preference records (`data.train_seed`; the validation and test samples stay the leaderboard's) and DCNv2 learns
the CTR rows of exactly those (user, item) pairs, with a vocabulary of what those rows hold (an id they never
show is out of vocabulary, as it would be for a model that saw only them). Both score the leaderboard's
preference sample. From the per-seed scores: `curves` (the mean over seeds, a bootstrap interval over the test
records of that mean, each seed's figure) and `wins` (the largest budget where the LLM row beats its
counterpart with a paired interval above 0, or None).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from raylib import RaylibError
from raylib.config import to_dict

COUNTERPARTS = {"tallrec": "dcnv2"}  # each LLM row and the classical row it is compared with at a budget


def budget_folder(out: Path, n: int, seed: int) -> Path:
    return out / "budgets" / f"n{n}-seed{seed}"


def preference_budget_scores(config, jobs: dict[str, Any], sample: dict[str, Any], run_method, out: Path):
    """{row: {N: [each seed's probabilities on the sample]}} for TALLRec and DCNv2 at every budget."""
    from raylib.data.ctr import load_ctr_data

    ctr = load_ctr_data(jobs["corella"].data)
    scores: dict[str, dict[int, list]] = {"tallrec": {}, "dcnv2": {}}
    for n in config.budgets:
        for seed in config.budget_seeds:
            folder = budget_folder(out, n, seed)
            job, probabilities, pairs = tallrec_at(config, jobs["tallrec"], n, seed, sample, folder, run_method)
            scores["tallrec"].setdefault(n, []).append(probabilities)
            scores["dcnv2"].setdefault(n, []).append(dcnv2_at(jobs["corella"], ctr, pairs, sample, folder))
    return scores


def tallrec_at(config, main_job, n: int, seed: int, sample: dict[str, Any], folder: Path, run_method):
    """TALLRec on N records drawn with `seed` (the leaderboard's validation and test samples): (its job, its
    probabilities on the sample, the (user, item) pairs it learned)."""
    import json

    from raylib.config import from_dict
    from raylib.methods.tallrec.config import TallrecJobConfig
    from raylib.methods.tallrec.pipeline import load_tallrec_data, run_tallrec

    values = to_dict(main_job)
    values.update(output_dir=str(folder / "tallrec"), skip_zero_shot=True,
                  data={**values["data"], "train_samples": n, "train_seed": seed})
    job = from_dict(TallrecJobConfig, values, where=f"leaderboard budget {n}, seed {seed}")
    outcome = run_method(config, f"budget-tallrec-n{n}-seed{seed}", job, run_tallrec)
    scored = json.loads(Path(outcome["report"]["test_scores"]).read_text())
    if scored["user_id"] != sample["user_id"] or scored["item_id"] != sample["item_id"]:
        raise RaylibError(f"leaderboard: TALLRec at budget {n} scored other test records than the sample.")
    train = load_tallrec_data(job.data).train
    return job, scored["tuned"], [(str(r.user_id), str(r.item_id)) for r in train]


def dcnv2_at(corella_job, ctr, pairs: list[tuple[str, str]], sample: dict[str, Any], folder: Path) -> list[float]:
    """DCNv2 (CoReLLa's stage 1, its recipe) on the CTR rows of `pairs`, scored on the sample's CTR rows."""
    from raylib import placement
    from raylib.data.ctr import CtrVocab
    from raylib.methods.corella.pipeline import CorellaViews, crm_scores_of, train_crm
    from raylib.stages import cached_stage, file_sha1

    rows = ctr.train.take(rows_of(ctr.train, pairs, "training"))
    vocab = CtrVocab.build(rows, ctr.features)  # what N rows show; anything else is out of vocabulary
    views = CorellaViews(vocab=vocab, source=ctr.source, crm_train=rows, crm_valid=ctr.valid, joint_train=[],
                         llm_train=[], stage_valid=[], valid=[], test=[], full_test=ctr.test)
    job = dataclasses.replace(corella_job, output_dir=str(folder / "dcnv2"))
    crm_dir = train_crm(job, views)
    test_rows = ctr.test.take(rows_of(ctr.test, list(zip(map(str, sample["user_id"]), map(str, sample["item_id"]))),
                                      "test"))
    key = {"crm": file_sha1(crm_dir / "model.safetensors"), "sample": sample}
    found = cached_stage(folder / "dcnv2_scores.json", key, lambda: {"probabilities": np.asarray(placement.run(
        crm_scores_of, str(crm_dir), vocab.records(test_rows), placement=placement.for_job(job))).tolist()})
    return found["probabilities"]


def rows_of(table, pairs: list[tuple[str, str]], split: str) -> list[int]:
    """Each (user, item) pair's first row in a CTR table (the same interaction the preference record holds)."""
    index: dict[tuple[str, str], int] = {}
    for row, pair in enumerate(zip(map(str, table.user_ids().tolist()), map(str, table.item_ids().tolist()))):
        index.setdefault(pair, row)
    missing = [p for p in pairs if p not in index]
    if missing:
        raise RaylibError(f"leaderboard: {len(missing)} {split} pairs have no CTR row, e.g. {missing[0]}.")
    return [index[p] for p in pairs]


# ------------------------------------------------------------------ curves and wins
def _auc_over_seeds(labels, scores):
    from raylib.metrics import auc

    return float(np.mean([auc(labels, scores[:, k]) for k in range(scores.shape[1])]))


def curves(labels: np.ndarray, scores: dict[str, dict[int, list]], rounds: int) -> dict[str, dict[str, Any]]:
    """`curves.<row>.<N>` = {mean, ci, seeds}: the AUC averaged over seeds, its bootstrap interval over the test
    records (the same resample for every seed), and each seed's AUC."""
    from raylib.metrics import auc, bootstrap_interval

    out: dict[str, dict[str, Any]] = {}
    for row, by_budget in scores.items():
        for n, per_seed in by_budget.items():
            stacked = np.column_stack(per_seed)
            out.setdefault(row, {})[str(n)] = {
                "mean": _auc_over_seeds(labels, stacked),
                "ci": bootstrap_interval(stacked, _auc_over_seeds, labels, rounds),
                "seeds": [auc(labels, np.asarray(s)) for s in per_seed]}
    return out


def wins(labels: np.ndarray, scores: dict[str, dict[int, list]], rounds: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`wins.<row>`: the largest budget where the row's seed-averaged AUC beats its counterpart's with a paired
    bootstrap interval above 0, or None; the paired difference at every budget, per row)."""
    from raylib.metrics import paired_bootstrap

    best: dict[str, Any] = {}
    detail: dict[str, Any] = {}
    for row, other in COUNTERPARTS.items():
        if row not in scores or other not in scores:
            continue
        paired = {}
        for n in sorted(set(scores[row]) & set(scores[other])):
            found = paired_bootstrap(np.column_stack(scores[row][n]), np.column_stack(scores[other][n]),
                                     _auc_over_seeds, labels, rounds)
            paired[str(n)] = {"diff": found["diff"], "ci": found["ci"]}
        beaten = [int(n) for n, found in paired.items() if found["ci"][0] > 0]
        best[row] = max(beaten) if beaten else None
        detail[row] = {"vs": other, "paired": paired}
    return best, detail
