"""A sixth method, outside raylib: one package declaring its `Method`, one `register` line
(tests/test_registry.py).
Its job counts its config's LoRA rank into a report; its table prints it."""

from pydantic.dataclasses import dataclass

from raylib.config import STRICT, TrainJob
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


METHOD = Method("echo", "Echo: says its words (a test's sixth method)", config="sixth_method:EchoJobConfig",
                recipe="echo.yaml", run="sixth_method:run_echo", show="sixth_method:summary_table",
                leaderboard_rows=("echo",))
