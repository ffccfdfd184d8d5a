"""A sixth method, outside raylib: one package declaring its `Method`, one `register` line
(tests/test_registry.py).
Its job counts its config's LoRA rank into a report; its table prints it. On the leaderboard it scores the
preference sample by each item's share of the training period's interactions."""

import time

import pyarrow.compute as pc
from pydantic.dataclasses import dataclass

from raylib.config import STRICT, DataSource, TrainJob
from raylib.methods.base import Method, write_run_report


@dataclass(config=STRICT)
class EchoJobConfig(TrainJob):
    words: str = "hello"


def run_echo(job: EchoJobConfig) -> dict:
    report = {"words": job.words, "rank": job.lora.r}
    report["report_path"] = str(write_run_report("echo", job.output_dir, job, report))
    return report


def summary_table(report: dict) -> str:
    return f"echo: {report['words']} at rank {report['rank']}"


def item_popularity(job: EchoJobConfig, data: DataSource, sample: dict) -> dict:
    """P(like) = the item's training-period interactions over the most popular item's (the time split's)."""
    from raylib.data.dataset import load_dataset, time_cutoffs

    start = time.time()
    interactions = load_dataset(data.dataset).interactions
    valid_from, _ = time_cutoffs(interactions.column("timestamp").to_numpy(), data.time_split)
    train = interactions.filter(pc.less(interactions.column("timestamp"), valid_from))
    counts = train.group_by("item_id").aggregate([("item_id", "count")])
    count_of = dict(zip(map(str, counts.column("item_id").to_pylist()), counts.column("item_id_count").to_pylist()))
    most = max(count_of.values())
    return {"probabilities": [count_of.get(str(item), 0) / most for item in sample["item_id"]],
            "train_records": train.num_rows, "features": "item ids", "seconds": time.time() - start}


METHOD = Method("echo", "Echo: says its words (a test's sixth method)", config="sixth_method:EchoJobConfig",
                recipe="echo.yaml", run="sixth_method:run_echo", show="sixth_method:summary_table",
                leaderboard_rows=("echo",), leaderboard_scores="sixth_method:item_popularity")
