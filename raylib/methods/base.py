"""What every command knows of a method, declared once, in the method's own package (`raylib.methods.<m>`):
`raylib list` and `raylib train` (the CLI), `raylib report` (a run's table, by the report's `method` field), the
planner (`raylib plan --job <m>`) and the leaderboard (its MLflow rows; a method added to its `recipes` scores
its preference sample by `leaderboard_scores`) read these objects. Code is named as
"module:attribute" strings and imported when first used, so the command starts fast.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any


def load(target: str) -> Any:
    """"module:attribute" -> the attribute, imported now."""
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    about: str    # one line for `raylib list`
    config: str   # "module:ConfigClass": the job's config
    recipe: str   # its default config file under jobs/configs
    run: str      # "module:function(config) -> report": the job
    show: str     # "module:function(report) -> str": the finished run's table
    # The leaderboard rows this method's MLflow run shows (its main row first); none: not on the leaderboard.
    leaderboard_rows: tuple[str, ...] = ()
    # "module:function(job, data, sample) -> row": how a method the leaderboard has no code of its own for
    # scores its preference sample (lists user_id, item_id, label of the test period), given its job (its recipe
    # under the leaderboard's `recipes`) and `data`, the leaderboard's `raylib.config.DataSource` (its `dataset`
    # and `time_split`, the periods every row learns and is tested in). The row: probabilities (one per sample
    # record), train_records, features, and optionally seconds (inference), train_s, epochs.
    leaderboard_scores: str = ""

    def config_class(self) -> type:
        return load(self.config)


REPORT_FILE = "report.json"


def write_run_report(method: str, folder: str | Path, job: Any, report: dict[str, Any]) -> Path:
    """A finished job's `<folder>/report.json`: the method (what `raylib report` reads to find its table), the
    job's config as shown (credentials hidden), then the report's own keys. Every method's job writes it so."""
    from raylib.config import shown_config
    from raylib.stages import write_json

    return write_json(Path(folder).expanduser().resolve() / REPORT_FILE,
                      {"method": method, "config": shown_config(job), **report})
