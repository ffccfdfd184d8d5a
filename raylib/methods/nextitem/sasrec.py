"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018): the conventional sequential
baseline, and the collaborative signal of BIGRec's CF re-weighting.

The model is Sec. III; it trains as a task of the shared Ray Train loop (`raylib.methods.nextitem.sasrec`) and is published
as `model.safetensors` + `config.json`. One deliberate change from the paper: the loss is a full softmax over the
catalogue, not Sec. III-E's binary cross-entropy with one sampled negative (Klenitskiy & Vasilev, RecSys 2023,
found SASRec clearly better that way; with a few thousand items the full softmax is cheap).

Ids: catalogue index i is embedding row i + 1, row 0 is padding; histories are left-padded, so the last position
always holds the most recent item.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from raylib.config import to_dict
from raylib.data.timelines import list_offsets, ranges
from raylib.item_text import ItemTextFeatures, load_table, table_dim
from raylib.methods.nextitem.config import SasrecJobConfig
from raylib.metrics import ranking_report
from raylib.stages import file_sha1
from raylib.train.checkpoint import RUN_LENGTH_FIELDS
from raylib.train.task import sharded_map
from raylib.train.whole_model import WholeModelCheckpoints


MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"
VIEWS_DIR = "views"  # the training and validation windows as Parquet, under the run's output_dir


class SelfAttentionBlock(nn.Module):
    """Sec. III-B (causal self-attention, then a point-wise two-layer ReLU FFN), each sub-layer wrapped as in
    Sec. III-C: g(x) = x + Dropout(g(LayerNorm(x))) (pre-LN, as the paper's code)."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.attention = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden_size, hidden_size))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        h = self.attention_norm(x)
        x = x + self.dropout(self.attention(h, h, h, attn_mask=blocked, need_weights=False)[0])
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class SASRec(nn.Module):
    def __init__(self, num_items: int, history_len: int = 10, hidden_size: int = 64, num_blocks: int = 2,
                 num_heads: int = 1, dropout: float = 0.2, text_dim: int = 0):
        super().__init__()
        self.hparams = {"num_items": num_items, "history_len": history_len, "hidden_size": hidden_size,
                        "num_blocks": num_blocks, "num_heads": num_heads, "dropout": dropout}
        # Sec. III-A: item embedding M (row 0 = padding) + a learned position embedding P.
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        # optional: M + a projection of each item's frozen LLM title vector (`raylib.item_text`)
        self.item_text = None
        if text_dim:
            self.hparams["text_dim"] = text_dim
            self.item_text = ItemTextFeatures(num_items + 1, text_dim, hidden_size)
        self.position_embedding = nn.Embedding(history_len, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SelfAttentionBlock(hidden_size, num_heads, dropout) for _ in range(num_blocks))
        self.final_norm = nn.LayerNorm(hidden_size)
        for embedding in (self.item_embedding, self.position_embedding):  # as the paper's code: small initial scores
            nn.init.xavier_normal_(embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def attention_mask(self, history: torch.Tensor) -> torch.Tensor:
        """[B * heads, L, L], True = may NOT attend. Sec. III-B "Causality": no later positions; no padding
        either, except that a position always sees itself, so an all-padding row stays finite (no NaN)."""
        length = history.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=history.device).tril()
        real_key = (history != 0).unsqueeze(1)  # [B, 1, L]
        allowed = causal & (real_key | torch.eye(length, dtype=torch.bool, device=history.device))
        return (~allowed).repeat_interleave(self.hparams["num_heads"], dim=0)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """[B, L] left-padded item ids (0 = padding) -> [B, num_items] scores of every catalogue item."""
        keep = (history != 0).unsqueeze(-1)  # the paper code's "timeline mask": padding stays zero
        positions = torch.arange(history.shape[1], device=history.device)
        items = self.items()
        x = F.embedding(history, items, padding_idx=0) * self.item_embedding.embedding_dim ** 0.5 + self.position_embedding(positions)
        x = self.dropout(x) * keep
        blocked = self.attention_mask(history)
        for block in self.blocks:  # Sec. III-C: stacked blocks
            x = block(x, blocked) * keep
        last = self.final_norm(x[:, -1])
        # Sec. III-D: relevance = F_t . M_i with the SHARED item embedding (padding row excluded).
        return last @ items[1:].T

    def items(self) -> torch.Tensor:
        """[num_items + 1, hidden] item vectors: M, plus the projected title vectors where the model has them."""
        weight = self.item_embedding.weight
        return weight if self.item_text is None else weight + self.item_text()


CHUNK_WINDOWS = 1 << 20  # windows per Parquet row group when the training windows are written


def window_table(windows, history_len: int) -> pa.Table:
    """Next-item windows as SASRec reads them: "history" (catalogue indices, oldest first, the last
    `history_len`) and "target" (a catalogue index), made with NumPy from the windows' columns."""
    starts = windows.history_starts(history_len)
    index, lengths = ranges(starts, windows.at)
    history = pa.ListArray.from_arrays(pa.array(list_offsets(lengths)), pa.array(windows.timelines.items[index]))
    return pa.table({"history": history, "target": pa.array(windows.targets.astype(np.int32))})


def window_records(windows, catalogue, history_len: int) -> list[dict]:
    """Next-item windows -> plain dicts {"history": [...], "target": ...} (`window_table`), for the few windows
    scored one by one (the sampled validation and test windows)."""
    return window_table(windows, history_len).to_pylist()


def write_window_records(windows, history_len: int, path: Path) -> Path:
    """Every window's `window_table` row to one Parquet file, a chunk of windows at a time: the training windows
    of a large dataset never sit in memory as one table, let alone as Python objects."""
    from raylib.data.tables import write_batches
    from raylib.data.timelines import chunks

    return write_batches(path, (window_table(windows[a:b], history_len)
                                for a, b in chunks(len(windows), CHUNK_WINDOWS)))


def history_tensor(histories: list[list[int]], history_len: int) -> torch.Tensor:
    """Catalogue indices -> [B, history_len] ids (index + 1), left-padded with 0, the most recent last."""
    out = torch.zeros((len(histories), history_len), dtype=torch.long)
    for row, history in enumerate(histories):
        history = history[-history_len:]
        if history:
            out[row, history_len - len(history):] = torch.tensor(history) + 1
    return out


def load_sasrec(folder: str | Path, device: torch.device | str = "cpu") -> SASRec:
    """A published model (`config.json` + `model.safetensors`; no pickle), fp32 on `device`, in eval mode."""
    from safetensors.torch import load_file

    from raylib.placement import note_weights_loaded

    folder = Path(folder)
    note_weights_loaded("sasrec", device)
    model = SASRec(**json.loads((folder / CONFIG_FILE).read_text()))
    model.load_state_dict(load_file(str(folder / MODEL_FILE)))
    return model.to(device).eval()


def scores_of_published(folder: str, record_lists: list[list[dict]]) -> list[np.ndarray]:
    """`sasrec_scores` of each list of records with the published model, on this process's device (pipelines
    run it in a Ray task placed by `raylib.placement`)."""
    from raylib.placement import device

    model = load_sasrec(folder, device())
    return [sasrec_scores(model, records) for records in record_lists]


@torch.no_grad()
def sasrec_scores(model: SASRec, records: list[dict], batch_size: int = 512) -> np.ndarray:
    """[len(records), num_items] float32 scores (higher = more likely next), in eval mode."""
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    out = [model(history_tensor([r["history"] for r in records[i:i + batch_size]], model.hparams["history_len"])
                 .to(device)).float().cpu().numpy() for i in range(0, len(records), batch_size)]
    model.train(was_training)
    return np.concatenate(out) if out else np.empty((0, model.hparams["num_items"]), np.float32)


def sasrec_stage(settings, train_windows, valid_windows, catalogue, output_dir: str | Path, history_len: int,
                 ray_address: str | None = None, fresh_start: bool = False, use_gpu: bool = False,
                 item_text: str | Path | None = None) -> tuple[SasrecJobConfig, Path, Path]:
    """SASRec's training job and its training and validation windows as Parquet (under `output_dir`, written a
    chunk of windows at a time). DeepSpeed runs ZeRO stage 0 (plain data parallel) in fp32: a model this small
    has nothing worth partitioning. `batch_size` is the global batch. `item_text`: item embeddings (the
    `raylib.item_text` Parquet) that SASRec adds to its item vectors."""
    from raylib.config import stage_job
    from raylib.item_text import aligned, save_table
    from raylib.train.whole_model import whole_model_train

    views = Path(output_dir).expanduser().resolve() / VIEWS_DIR
    table = None
    if item_text is not None:  # catalogue index i is row i + 1
        index = {item: k + 1 for k, item in enumerate(catalogue.item_ids)}
        table = save_table(views / "item_text.safetensors", aligned(item_text, index, len(catalogue) + 1))
    job = stage_job(SasrecJobConfig, where="SASRec job", item_text=table, model={"dtype": "fp32"}, sasrec=settings,
                    num_items=len(catalogue), history_len=history_len, output_dir=str(output_dir),
                    ray_address=ray_address,
                    train=whole_model_train(settings, eval_batch_size=512, fresh_start=fresh_start, use_gpu=use_gpu))
    return (job, write_window_records(train_windows, history_len, views / "train.parquet"),
            write_window_records(valid_windows, history_len, views / "valid.parquet"))


def train_sasrec(settings, train_windows, valid_windows, catalogue, output_dir: str | Path, history_len: int,
                 ray_address: str | None = None, fresh_start: bool = False, use_gpu: bool = False,
                 item_text: str | Path | None = None) -> Path:
    """Train SASRec on Ray Train workers through the shared loop (`sasrec_stage`); returns the published folder.
    A rerun with the same `output_dir` resumes (or just returns) the same run."""
    from raylib.runtime import ensure_ray
    from raylib.train.driver import train

    job, train_path, valid_path = sasrec_stage(settings, train_windows, valid_windows, catalogue, output_dir,
                                               history_len, ray_address, fresh_start, use_gpu, item_text)
    ensure_ray(ray_address)
    return train(SasrecTask, job, train_path, valid_path).published_dir


# ------------------------------------------------------------------ training it (a task of raylib.train)
class SasrecTask(WholeModelCheckpoints):
    task_id: ClassVar[str] = "sasrec"  # in run fingerprints: a stable name, whatever module holds the class
    name: ClassVar[str] = "sasrec"  # checkpoint files and the published folder (`whole_model`)
    config_cls: ClassVar[type] = SasrecJobConfig
    metric: ClassVar[str] = "ndcg@10"
    higher_is_better: ClassVar[bool] = True

    @staticmethod
    def hparams(job) -> dict[str, Any]:
        s = job.sasrec
        shape = {"num_items": job.num_items, "history_len": job.history_len, "hidden_size": s.hidden_size,
                 "num_blocks": s.num_blocks, "num_heads": s.num_heads, "dropout": s.dropout}
        if job.item_text:
            shape["text_dim"] = table_dim(job.item_text)
        return shape

    # ------------------------------------------------------------ model and data
    def build(self) -> torch.nn.Module:
        model = SASRec(**self.hparams(self.job))
        if self.job.item_text:
            model.item_text.fill(load_table(self.job.item_text))
        return model.to(self.ctx.device, torch.float32)

    def encode(self, records: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
        return records  # already lists of ints; collate pads them

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {"history": history_tensor([i["history"] for i in items], self.job.history_len),
                "target": torch.tensor([i["target"] for i in items], dtype=torch.long)}

    # ------------------------------------------------------------ objective
    def loss(self, module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of the true next item against every catalogue item (see `raylib.methods.nextitem.sasrec`)."""
        return F.cross_entropy(module(batch["history"]), batch["target"])

    @torch.no_grad()
    def validate(self, module, items: list[dict[str, Any]]) -> dict[str, float]:
        """NDCG@10 / HR@10 over the full catalogue; rank = 1 + items scored strictly higher (ties share the best)."""
        def ranks(batch: list[dict[str, Any]]) -> list[int]:
            tensors = {k: v.to(self.ctx.device) for k, v in self.collate(batch).items()}
            scores = module(tensors["history"])
            own = scores.gather(1, tensors["target"].unsqueeze(1))
            return (1 + (scores > own).sum(1)).tolist()

        module.eval()
        values = sharded_map(items, ranks, self.job.train.eval_batch_size, self.ctx)
        module.train()
        report = ranking_report(values, (10,))
        return {"ndcg@10": report["ndcg@10"], "hr@10": report["hr@10"]}

    def shape(self) -> dict[str, Any]:
        return self.hparams(self.job)

    @classmethod
    def fingerprint(cls, job) -> dict[str, Any]:
        # Run-length settings (epochs, patience, workers) may change between a run and its resumption.
        settings = {k: v for k, v in to_dict(job.sasrec).items() if k not in RUN_LENGTH_FIELDS}
        found = {"sasrec": settings, "num_items": job.num_items, "history_len": job.history_len}
        if job.item_text:  # only then: a plain run keeps the fingerprint it had before item text existed
            found["item_text"] = file_sha1(job.item_text)
        return found
