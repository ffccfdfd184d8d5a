"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018): the conventional sequential
baseline, and the collaborative signal of BIGRec's CF re-weighting. Trained through the shared trainer
(`raylib.tasks.sasrec`), published as safetensors + a JSON config.

Item ids: catalogue index i is embedding row i + 1; row 0 is padding. Histories are left-padded to `max_len`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"


class SASRec(nn.Module):
    def __init__(self, num_items: int, max_len: int = 10, hidden_size: int = 64, num_blocks: int = 2,
                 num_heads: int = 1, dropout: float = 0.2):
        super().__init__()
        self.config = {"num_items": num_items, "max_len": max_len, "hidden_size": hidden_size,
                       "num_blocks": num_blocks, "num_heads": num_heads, "dropout": dropout}
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden_size)  # Sec. III-B: learnable positions
        self.dropout = nn.Dropout(dropout)
        # Sec. III-C/D: causal self-attention + point-wise feed-forward blocks with residuals, layer norm, dropout.
        layer = nn.TransformerEncoderLayer(hidden_size, num_heads, hidden_size, dropout, activation="relu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)
        for embedding in (self.item_embedding, self.position_embedding):  # small scores at the start
            nn.init.xavier_normal_(embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.register_buffer("causal", torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), 1),
                             persistent=False)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """[B, L] left-padded item ids (0 = padding) -> [B, num_items] scores of every catalogue item."""
        length = history.shape[1]
        positions = torch.arange(length, device=history.device)
        x = self.item_embedding(history) * self.item_embedding.embedding_dim ** 0.5 + self.position_embedding(positions)
        x = self.dropout(x) * (history != 0).unsqueeze(-1)
        # Padding keys are masked, except each position may always see itself (an empty history stays finite).
        padding = (history == 0).unsqueeze(1).expand(-1, length, -1)
        blocked = self.causal[:length, :length].unsqueeze(0) | padding
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=history.device).unsqueeze(0)
        heads = self.blocks.layers[0].self_attn.num_heads
        mask = blocked.repeat_interleave(heads, dim=0)
        hidden = self.norm(self.blocks(x, mask=mask))[:, -1, :]
        return hidden @ self.item_embedding.weight[1:].T  # Sec. III-E: shared item embedding


def window_records(windows, catalogue, history_len: int) -> list[dict]:
    """Plain-dict records: {"history": [catalogue indices, oldest first], "target": index}."""
    return [{"history": [catalogue.position(i) for i in w.history][-history_len:],
             "target": catalogue.position(w.target)} for w in windows]


def history_tensor(histories: list[list[int]], max_len: int) -> torch.Tensor:
    """Left-padded [B, max_len] ids (catalogue index + 1; 0 = padding)."""
    out = torch.zeros((len(histories), max_len), dtype=torch.long)
    for row, h in enumerate(histories):
        h = h[-max_len:]
        if h:
            out[row, max_len - len(h):] = torch.tensor(h) + 1
    return out


def build_sasrec(config: dict) -> SASRec:
    return SASRec(**config)


def load_sasrec(folder: str | Path) -> SASRec:
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    model = build_sasrec(config["model"])
    model.load_state_dict(load_file(str(folder / MODEL_FILE)))
    return model.eval()


@torch.no_grad()
def sasrec_scores(model: SASRec, records: list[dict], batch_size: int = 512) -> np.ndarray:
    """[len(records), num_items] float32 scores (higher = more likely next)."""
    model.eval()
    out = [model(history_tensor([r["history"] for r in records[i:i + batch_size]], model.config["max_len"])).numpy()
           for i in range(0, len(records), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.empty((0, model.config["num_items"]), np.float32)


def train_sasrec(settings, train_windows, valid_windows, catalogue, output_dir: str | Path, history_len: int,
                 ray_address: str | None = None, fresh_start: bool = False) -> Path:
    """Train SASRec on every training window through the shared Ray Train loop; returns the published folder.
    DeepSpeed runs ZeRO stage 0 (plain data parallel) in fp32: a model this small has nothing to partition."""
    import dataclasses

    from raylib.config import SasrecJobConfig, from_dict
    from raylib.tasks.sasrec import SasrecTask
    from raylib.train.driver import train

    s = dataclasses.asdict(settings)
    job = from_dict(SasrecJobConfig, {
        "model": {"dtype": "fp32"}, "sasrec": s, "num_items": len(catalogue), "history_len": history_len,
        "output_dir": str(output_dir), "ray_address": ray_address,
        "train": {"learning_rate": s["learning_rate"], "batch_size": s["batch_size"] * s["num_workers"],
                  "micro_batch_size": s["batch_size"], "epochs": s["epochs"], "patience": s["patience"],
                  "weight_decay": s["weight_decay"], "zero_stage": 0, "num_workers": s["num_workers"],
                  "eval_batch_size": 512, "fresh_start": fresh_start}})
    result = train(SasrecTask, job, window_records(train_windows, catalogue, history_len),
                   window_records(valid_windows, catalogue, history_len))
    return result.adapter_dir
