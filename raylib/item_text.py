"""An LLM's item-title embeddings as an item feature of a conventional model ("LLM as a feature encoder": the
conventional model keeps its ids and adds a projection of a frozen text vector per item; RecBench, NeurIPS 2025,
measured such models at about 95% of the LLM recommender's accuracy for a fraction of its inference cost).

Exchanged as Parquet (`item_id` string, `embedding` list of float32), the form a user can bring from any
encoder; a model reads it as a frozen [rows, dim] table in its own index order (`aligned`), zero for the padding
row and for any item the file lacks, saved in the model's safetensors (so a published model carries it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from raylib import RaylibError

TABLE_KEY = "embeddings"  # the aligned table in a stage's safetensors file


class ItemTextFeatures(nn.Module):
    """A frozen [rows, dim] table of item vectors and a learned linear projection to the model's width
    (no bias, so the zero padding row stays zero)."""

    def __init__(self, rows: int, dim: int, width: int):
        super().__init__()
        self.register_buffer("table", torch.zeros(rows, dim))
        self.projection = nn.Linear(dim, width, bias=False)

    def fill(self, table: torch.Tensor) -> None:
        if tuple(table.shape) != tuple(self.table.shape):
            raise RaylibError(f"Item text table of shape {tuple(table.shape)} where the model has "
                              f"{tuple(self.table.shape)}.")
        with torch.no_grad():
            self.table.copy_(table)

    def forward(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The projected vectors of `ids` (any shape), or of every row."""
        return self.projection(self.table if ids is None else self.table[ids])


def write_embeddings(path: Path, item_ids: list[str], embeddings: torch.Tensor | np.ndarray) -> Path:
    """Item embeddings as the exchange Parquet (`item_id`, `embedding`)."""
    matrix = np.asarray(embeddings, dtype=np.float32)
    flat = pa.array(matrix.reshape(-1))
    table = pa.table({"item_id": pa.array([str(i) for i in item_ids], pa.string()),
                      "embedding": pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def aligned(path: str | Path, index: dict[str, int], rows: int) -> torch.Tensor:
    """[rows, dim] float32: the vector of item `i` at row `index[i]`; rows no item of the file names are zero.
    One line naming the file if it lacks the columns or holds no vector of any indexed item."""
    table = pq.read_table(path)
    if not {"item_id", "embedding"} <= set(table.column_names):
        raise RaylibError(f"Item embeddings {path}: need columns item_id and embedding (has {table.column_names}).")
    ids = [str(i) for i in table.column("item_id").to_pylist()]
    column = table.column("embedding").combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    if len(column) == 0 or column.null_count or len(flat) % len(column):
        raise RaylibError(f"Item embeddings {path}: every item needs one vector of the same length.")
    vectors = flat.reshape(len(column), -1)
    out = torch.zeros(rows, vectors.shape[1])
    found = [(index[item], k) for k, item in enumerate(ids) if item in index]
    if not found:
        raise RaylibError(f"Item embeddings {path}: none of its {len(ids)} item_ids is an item of the model.")
    at, source = (torch.tensor(x) for x in zip(*found))
    out[at] = torch.from_numpy(vectors)[source]
    return out


def save_table(path: Path, table: torch.Tensor) -> str:
    """A stage's aligned table as safetensors (what its training workers read); returns the path."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({TABLE_KEY: table.contiguous()}, str(path))
    return str(path)


def load_table(path: str | Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))[TABLE_KEY]


def table_dim(path: str | Path) -> int:
    """The width of a saved table, read from the file's header."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return int(f.get_slice(TABLE_KEY).get_shape()[1])
