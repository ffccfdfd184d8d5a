"""The one Ray Train + DeepSpeed ZeRO LoRA loop (TALLRec's rec-tuning, Sec. 3.2), checkpoints and resume."""

from raylib.train.driver import TrainResult, train_lora
from raylib.train.deepspeed_config import deepspeed_config

__all__ = ["TrainResult", "train_lora", "deepspeed_config"]
