"""TALLRec end to end (Bao et al., RecSys 2023): data -> zero-shot AUC -> LoRA rec-tuning -> tuned AUC -> report.

Scoring runs in a Ray task placed by `raylib.placement` (a GPU when training uses GPUs, every core of a node
otherwise), training on Ray Train workers: the driver loads no weights, so the same pipeline runs from a laptop's
local Ray or through `ray job submit` from a cluster's CPU head node.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pyarrow.compute import sum as pa_sum

from raylib import RaylibError
from raylib.methods.base import write_run_report
from raylib.config import ModelConfig, shown_config, to_dict
from raylib.methods.tallrec.config import DataConfig, EvalConfig, TallrecJobConfig
from raylib.data.movielens import load_movielens
from raylib.data.records import (
    RecordRows, TallrecRecord, build_tallrec_records, labels_of, read_records, records_to_table, sample_records,
    split_by_user, stratified_sample,
)
from raylib.prompts import TALLREC_ANSWERS


@dataclasses.dataclass
class TallrecData:
    train: list[TallrecRecord]
    valid: list[TallrecRecord]
    test: Sequence[TallrecRecord]  # as columns (`RecordRows`) when built from interactions: it may be large
    train_pool_size: int
    source: str


def movielens_records(data: DataConfig) -> tuple[RecordRows, str]:
    """Records built from MovieLens, as columns (`RecordRows`: text is made only for the records a job reads)."""
    ml = load_movielens(data.movielens_dir)
    return build_tallrec_records(ml.interactions, ml.items, data.history_len, data.like_threshold), ml.source


def dataset_records(data: DataConfig, domain: str = "movie") -> tuple[RecordRows, ...]:
    """Train / valid / test records of a dataset (`data.dataset`): targets rated in each period of the one time
    split, histories reaching back across it. A `label` column is the answer where there is no rating."""
    from raylib.data.dataset import load_dataset, time_cutoffs

    dataset = load_dataset(data.dataset)
    dataset.require("items", ("title",), "TALLRec (its prompts are titles)")
    inter, threshold = dataset.interactions, data.like_threshold
    if "rating" not in inter.column_names:
        dataset.require("interactions", ("label",), "TALLRec (a like label, or a rating to threshold)")
        inter, threshold = inter.append_column("rating", inter.column("label").cast("float64")), 0.5
    valid_at, test_at = time_cutoffs(inter.column("timestamp").to_numpy(), data.time_split)
    records = build_tallrec_records(inter, dataset.items, data.history_len, threshold, domain)
    stamps = records.timestamps  # each period's records: targets rated then, histories reaching back across it
    periods = records[stamps < valid_at], records[(stamps >= valid_at) & (stamps < test_at)], records[stamps >= test_at]
    for name, period in zip(("training", "validation", "test"), periods):
        if not len(period):
            raise RaylibError(f"Dataset {data.dataset}: no record has its target in the {name} period (every record "
                              f"needs history_len={data.history_len} earlier interactions of its user).")
    return periods


def load_tallrec_data(data: DataConfig) -> TallrecData:
    """Train (few-shot sample), validation and test records, from a dataset, MovieLens or the user's files."""
    if data.dataset:
        pool, valid, test = dataset_records(data)
        source = data.dataset
    elif data.source == "movielens":
        records, source = movielens_records(data)
        pool, valid, test = split_by_user(records, data.valid_fraction, data.test_fraction, data.seed)
    elif data.source == "files":
        if not data.train_file:
            raise RaylibError("data.source=files needs data.train_file (TALLRec-format .json/.jsonl/.parquet).")
        pool = read_records(data.train_file)
        valid = read_records(data.valid_file) if data.valid_file else []
        test = read_records(data.test_file) if data.test_file else []
        source = data.train_file
    else:
        raise RaylibError(f"data.source={data.source!r} must be 'movielens' or 'files'.")
    answers = {TALLREC_ANSWERS[1 - label] for label in np.unique(labels_of(valid))}
    if len(answers) == 1:  # validation AUC (early stopping) needs both labels: stop before any training
        only = answers.pop()
        other = TALLREC_ANSWERS[1] if only == TALLREC_ANSWERS[0] else TALLREC_ANSWERS[0]
        if data.source == "files":
            raise RaylibError(f"data.valid_file {data.valid_file} holds only records answered {only!r}; "
                              f"validation AUC needs both answers, so add records answered {other!r}.")
        if data.dataset:
            raise RaylibError(f"Dataset {data.dataset}: the validation period has only records answered {only!r}; "
                              "validation AUC needs both answers.")
        raise RaylibError(f"The validation users (data.valid_fraction={data.valid_fraction}) have only records "
                          f"answered {only!r}; validation AUC needs both answers, so raise data.valid_fraction.")
    return TallrecData(
        train=list(sample_records(pool, data.train_samples, data.seed if data.train_seed is None
                                  else data.train_seed)),
        valid=list(stratified_sample(valid, data.valid_samples, data.seed)),
        test=sample_records(test, data.test_samples, data.seed),
        train_pool_size=len(pool), source=source,
    )


def score_records(model_cfg: ModelConfig, records: list[TallrecRecord], adapter_dir: str | None = None,
                  max_length: int = 512, eval_cfg: EvalConfig | None = None) -> dict[str, Any]:
    """Load the model (plus adapter) in this process and compute AUC / LogLoss / accuracy of P(Yes).

    The model is loaded in the evaluation dtype (`eval_cfg.dtype`, by the dtype rule), not in the training dtype
    `model_cfg.dtype`; the report records it as "eval_dtype". Jobs score through `score_on_ray` (an actor pool);
    this is the one-process path (benchmarks compare where it runs)."""
    from raylib.metrics import binary_report

    eval_cfg = eval_cfg if eval_cfg is not None else EvalConfig()
    score = RecordScorer(model_cfg, adapter_dir, max_length, eval_cfg)()
    start = time.time()
    out = score(records_to_table(list(records)))
    seconds = time.time() - start
    report = binary_report([r.label for r in records], out["p_yes"])
    report.update(_scoring_facts(eval_cfg, len(records), seconds, sum(out["tokens"]), out["dtype"][0],
                                 out["device"][0]))
    report["probabilities"] = np.asarray(out["p_yes"]).tolist()
    return report


def _scoring_facts(eval_cfg: EvalConfig, records: int, seconds: float, tokens: int, dtype: str,
                   device: str) -> dict[str, Any]:
    return {"records": records, "seconds": seconds, "eval_dtype": dtype, "device": device,
            "scoring": eval_cfg.scoring, "prefix_cache": eval_cfg.prefix_cache, "batch_size": eval_cfg.batch_size,
            "approx_tokens_per_s": tokens / max(seconds, 1e-9)}


@dataclasses.dataclass(frozen=True)
class RecordScorer:
    """What each scoring actor builds (`raylib.batch`): the model (plus adapter) in the evaluation dtype on its
    device, then, per batch of records, P(Yes), the prompt's tokens, and the dtype and device it ran in."""
    model: ModelConfig
    adapter_dir: str | None
    max_length: int
    eval: EvalConfig

    def __call__(self):
        from raylib.data.records import records_from_table
        from raylib.encoding import answer_token_ids
        from raylib.evaluate import answer_probabilities, encode_all
        from raylib.model import load_tokenizer, load_with_adapter
        from raylib.placement import choose_dtype, device as local_device, dtype_name

        here = local_device()
        dtype = choose_dtype(self.eval.dtype, here)
        tokenizer = load_tokenizer(self.model)
        model = load_with_adapter(self.model, self.adapter_dir, here, dtype)

        def score(batch) -> dict[str, Any]:
            encoded = encode_all(tokenizer, records_from_table(batch), self.max_length)
            probs = answer_probabilities(model, tokenizer, encoded, answer_token_ids(tokenizer), self.eval.batch_size,
                                         progress=False, scoring=self.eval.scoring,
                                         prefix_cache=self.eval.prefix_cache)
            return {"p_yes": probs, "tokens": [len(e.input_ids) for e in encoded],
                    "dtype": [dtype_name(dtype)] * len(encoded), "device": [here.type] * len(encoded)}

        return score


def record_tables(records: Sequence[TallrecRecord], chunk: int = 1 << 14):
    """The records as tables a chunk at a time: the text of a large test split is made as it is written."""
    for start in range(0, len(records), chunk):
        yield records_to_table(list(records[start:start + chunk]))


def score_on_ray(job: TallrecJobConfig, records: Sequence[TallrecRecord], adapter_dir: str | None) -> dict[str, Any]:
    """`RecordScorer` over every record in a Ray Data pool of actors placed by the job's config (`raylib.batch`:
    `inference.gpus` each, `inference.actors` of them), with the job's `eval` settings; resumable part by part
    under `<output_dir>/inference/`. (`train.eval_batch_size` is in-training validation's.)"""
    from raylib import placement
    from raylib.batch import map_rows
    from raylib.metrics import binary_report
    from raylib.train.checkpoint import adapter_sha1

    key = {"model": to_dict(job.model), "adapter": adapter_sha1(adapter_dir) if adapter_dir else None,
           "max_length": job.data.max_length, "eval": to_dict(job.eval)}
    out = map_rows(RecordScorer(job.model, adapter_dir, job.data.max_length, job.eval), record_tables(records),
                   Path(job.output_dir).expanduser().resolve() / "inference" / "tallrec", key,
                   placement.for_job(job), job.inference.actors, batch_rows=8 * job.eval.batch_size,
                   desc="scoring")
    probs = np.asarray(out.column("p_yes").to_numpy())
    report = binary_report(labels_of(records), probs)
    report.update(_scoring_facts(job.eval, len(records), float(pa_sum(out.column("_seconds"))),
                                 int(pa_sum(out.column("tokens"))), out.column("dtype")[0].as_py(),
                                 out.column("device")[0].as_py()))
    report["probabilities"] = probs.tolist()
    return report


def check_inputs(job: TallrecJobConfig, data: TallrecData) -> None:
    """Unknown model names and prompts that cannot fit stop the job here, before any training starts."""
    from raylib.encoding import encode_for_scoring, encode_for_training
    from raylib.model import load_tokenizer

    tokenizer = load_tokenizer(job.model)  # resolves the name first: unknown names fail with one line
    for split, records in (("train", data.train), ("valid", data.valid), ("test", one_per_item(data.test))):
        for i, record in enumerate(records):
            if split == "train":
                encode_for_training(tokenizer, record, job.data.max_length, job.train.loss_on, f"{split} record {i}")
            else:
                encode_for_scoring(tokenizer, record, job.data.max_length, f"{split} record {i}")


def one_per_item(records: Sequence[TallrecRecord]) -> Sequence[TallrecRecord]:
    """Records as columns: the first record of each target item. Whether a prompt fits depends on its question
    (the target's title): once the question fits, history items are dropped until the prompt does."""
    if not isinstance(records, RecordRows):
        return records
    return records[np.sort(np.unique(records.items, return_index=True)[1])]


def run_tallrec(job: TallrecJobConfig) -> dict[str, Any]:
    """The whole TALLRec job; returns the report also written to `<output_dir>/report.json`."""

    from raylib.plan import check_job_fits

    start = time.time()
    check_job_fits(job)  # a GPU job whose training or scoring cannot fit stops before the zero-shot scoring
    data = load_tallrec_data(job.data)  # fails fast on bad input, before any model work
    check_inputs(job, data)
    from raylib.methods.tallrec.task import TallrecTask
    from raylib.train.driver import prepare_output_dir

    prepare_output_dir(TallrecTask, job, data.train, data.valid)  # a different run's checkpoints stop us here
    print(f"[tallrec] data from {data.source}: {len(data.train)} train (of {data.train_pool_size}), "
          f"{len(data.valid)} valid, {len(data.test)} test records", flush=True)
    test_scores: dict[str, list[float]] = {}  # P(Yes) of each test record, by scorer
    report: dict[str, Any] = {"config": shown_config(job), "data": {
        "source": data.source, "train": len(data.train), "train_pool": data.train_pool_size,
        "valid": len(data.valid), "test": len(data.test)}}
    if data.test and not job.skip_zero_shot:
        print(f"[tallrec] zero-shot scoring of the test split ({job.eval.dtype}, {job.eval.scoring}) ...",
              flush=True)
        zero = score_on_ray(job, data.test, None)
        report["zero_shot"] = {k: v for k, v in zero.items() if k != "probabilities"}
        test_scores["zero_shot"] = zero["probabilities"]
    result = train_tallrec(job, data.train, data.valid)
    report["train"] = {"wall_time_s": result.wall_time_s, "epochs_run": result.state.epoch,
                       "best_epoch": result.state.best_epoch, "optimizer_steps": result.state.global_step,
                       "tokens_per_s": _mean([h["train_tokens_per_s"] for h in result.state.history]),
                       "history": result.state.history}
    report["adapter_dir"] = str(result.published_dir)
    if data.test:
        print(f"[tallrec] scoring the test split with the tuned adapter ({job.eval.dtype}, {job.eval.scoring}) ...",
              flush=True)
        tuned = score_on_ray(job, data.test, str(result.published_dir))
        report["tuned"] = {k: v for k, v in tuned.items() if k != "probabilities"}
        test_scores["tuned"] = tuned["probabilities"]
    report["wall_time_s"] = time.time() - start
    folder = Path(job.output_dir).expanduser().resolve()
    if test_scores:
        report["test_scores"] = str(write_test_scores(folder / TEST_SCORES, data.test, test_scores))
    path = write_run_report("tallrec", folder, job, {k: v for k, v in report.items() if k != "config"})
    report["report_path"] = str(path)
    return report


TEST_SCORES = "test_scores.json"


def write_test_scores(path: Path, records: list[TallrecRecord], scores: dict[str, list[float]]) -> Path:
    """Each test record's user, item, label and P(Yes) by each scorer (zero-shot, tuned), in the test order:
    what paired comparisons (the leaderboard's) need."""
    rows = {"user_id": [r.user_id for r in records], "item_id": [r.item_id for r in records],
            "label": [r.label for r in records], **scores}
    path.write_text(json.dumps(rows))
    return path


def train_tallrec(job, train_records, valid_records, after_step=None):
    """TALLRec's rec-tuning: `raylib.train.train` with the TALLRec task; its best adapter and history."""
    from raylib.methods.tallrec.task import TallrecTask
    from raylib.train.driver import train

    return train(TallrecTask, job, train_records, valid_records, after_step=after_step)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summary_table(report: dict[str, Any]) -> str:
    rows = [("", "AUC", "LogLoss", "ACC")]
    for name in ("zero_shot", "tuned"):
        if name in report:
            m = report[name]
            rows.append((name.replace("_", "-"), f"{m['auc']:.4f}", f"{m['logloss']:.4f}", f"{m['accuracy']:.4f}"))
    lines = [f"{a:<10}{b:>8}{c:>9}{d:>8}" for a, b, c, d in rows]
    scored = next((report[n] for n in ("tuned", "zero_shot") if n in report), {})
    if "eval_dtype" in scored:
        lines.append(f"scored in {scored['eval_dtype']}, {scored.get('scoring', 'pair')} scoring")
    lines.append(f"test records: {report['data']['test']}, train samples: {report['data']['train']}, "
                 f"train {report['train']['tokens_per_s']:.0f} tok/s, wall {report['wall_time_s']:.0f} s")
    lines.append(f"adapter: {report['adapter_dir']}")
    lines.append(f"report:  {report.get('report_path', '')}")
    return "\n".join(lines)
