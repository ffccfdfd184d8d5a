"""The one Ray Train + DeepSpeed ZeRO loop every method trains through; a task (`task.py`) supplies the rest."""

from raylib.train.driver import TrainResult, train
from raylib.train.deepspeed_config import deepspeed_config

__all__ = ["TrainResult", "train", "deepspeed_config"]
