"""DCNv2 (Wang et al., "DCN V2: Improved Deep & Cross Network", WWW 2021): CoReLLa's conventional model (CRM).

Input (Sec. 3.1): one embedding per categorical field (`raylib.data.ctr.SINGLE_FIELDS`), the item's genres and
the user's recent items mean-pooled into one embedding each (a history item is its item embedding, shared with
the target's, plus an embedding of the rating the user gave it); x0 is their concatenation. Cross network (Sec. 3.2, Eq. 1): x_{l+1} = x0 * (W_l x_l + b_l) + x_l, full rank, or the low-rank
mixture of experts of Sec. 5 (Eq. 3-4). Deep network: ReLU MLP. "stacked" runs the deep tower on the cross
network's output, "parallel" runs both on x0 and concatenates them (Fig. 2). The forward pass also returns every
cross layer's output: CoReLLa aligns them with the LLM's hidden states (`raylib.methods.corella.pipeline`).

Published as `model.safetensors` + `config.json` (the constructor's arguments) + `vocab.json` (the feature
vocabularies and their hash): no pickle.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raylib import RaylibError
from raylib.config import to_dict
from raylib.data.ctr import PAD, SINGLE_FIELDS, CtrVocab
from raylib.item_text import ItemTextFeatures, load_table
from raylib.methods.corella.config import CrmJobConfig
from raylib.metrics import binary_report
from raylib.train.checkpoint import RUN_LENGTH_FIELDS
from raylib.train.task import sharded_map
from raylib.train.whole_model import WholeModelCheckpoints

MODEL_FILE, CONFIG_FILE, VOCAB_FILE = "model.safetensors", "config.json", "vocab.json"
ITEM_COLUMN = SINGLE_FIELDS.index("item_id")  # the target item's column of `fields`
CRM_INPUTS = ("fields", "genres", "history", "history_rating_codes")  # `DCNv2.forward`'s tensors, in its order


class CrossLayer(nn.Module):
    """Eq. 1 (full rank): x0 * (W x + b) + x."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class LowRankMixtureCrossLayer(nn.Module):
    """Sec. 5, Eq. 4: sum_i G_i(x) * x0 * (U_i g(C_i g(V_i^T x)) + b) + x, with softmax gates G and g = tanh."""

    def __init__(self, width: int, rank: int, experts: int):
        super().__init__()
        self.v = nn.Parameter(torch.randn(experts, width, rank) * width ** -0.5)
        self.c = nn.Parameter(torch.randn(experts, rank, rank) * rank ** -0.5)
        self.u = nn.Parameter(torch.randn(experts, rank, width) * rank ** -0.5)
        self.bias = nn.Parameter(torch.zeros(width))
        self.gate = nn.Linear(width, experts, bias=False)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        low = torch.tanh(torch.einsum("bd,edr->ber", x, self.v))
        low = torch.tanh(torch.einsum("ber,ers->bes", low, self.c))
        experts = x0.unsqueeze(1) * (torch.einsum("ber,erd->bed", low, self.u) + self.bias)  # [B, E, D]
        gates = self.gate(x).softmax(-1).unsqueeze(-1)
        return (gates * experts).sum(1) + x


@dataclasses.dataclass(frozen=True)
class DCNv2Config:
    """DCNv2's shape: the vocabulary's field sizes and the `crm` settings that size the model (`of`). Its JSON
    form (`as_dict`) is what config.json holds beside the weights and what a stage's job carries as `crm_shape`."""
    field_sizes: dict[str, int]
    embedding_dim: int = 16
    cross_layers: int = 3
    low_rank: int = 0  # 0: full-rank cross layers (Eq. 1); r > 0: the low-rank mixture (Sec. 5)
    experts: int = 4
    deep_layers: tuple[int, ...] = (256, 128)
    structure: str = "parallel"  # Sec. 3: "stacked" or "parallel"
    dropout: float = 0.1
    text_dim: int = 0  # the item's LLM title vector as one more field (`raylib.item_text`); 0: none

    def __post_init__(self) -> None:
        missing = [f for f in SINGLE_FIELDS + ("genres", "rating") if f not in self.field_sizes]
        if missing:
            raise RaylibError(f"DCNv2 needs vocabulary sizes for {missing}.")
        if self.structure not in ("stacked", "parallel"):
            raise RaylibError(f"crm.structure must be stacked or parallel (got {self.structure!r}).")

    @classmethod
    def of(cls, settings, vocab: CtrVocab, text_dim: int = 0) -> "DCNv2Config":
        """The shape from `crm` settings (`CrmSettings`) and the vocabulary."""
        return cls(vocab.sizes, settings.embedding_dim, settings.cross_layers, settings.low_rank, settings.experts,
                   tuple(settings.deep_layers), settings.structure, settings.dropout, text_dim)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "CRM config") -> "DCNv2Config":
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise RaylibError(f"{where}: DCNv2 has no argument(s) {unknown}.")
        return cls(**{**values, "deep_layers": tuple(values.get("deep_layers", cls.deep_layers))})

    def as_dict(self) -> dict[str, Any]:
        """The JSON form; `text_dim` only when set, as configs and run fingerprints held it before it existed."""
        out = {**dataclasses.asdict(self), "field_sizes": dict(self.field_sizes),
               "deep_layers": list(self.deep_layers)}
        if not self.text_dim:
            del out["text_dim"]
        return out


class DCNv2(nn.Module):
    def __init__(self, config: DCNv2Config):
        super().__init__()
        self.config = config
        field_sizes, embedding_dim, dropout = config.field_sizes, config.embedding_dim, config.dropout
        self.embeddings = nn.ModuleDict({f: nn.Embedding(field_sizes[f], embedding_dim, padding_idx=PAD)
                                         for f in SINGLE_FIELDS + ("genres", "rating")})
        width = embedding_dim * (len(SINGLE_FIELDS) + 2)  # + pooled genres + pooled history
        # optional: the target item's frozen LLM title vector, projected, as one more field (`raylib.item_text`)
        self.item_text = None
        if config.text_dim:
            self.item_text = ItemTextFeatures(field_sizes["item_id"], config.text_dim, embedding_dim)
            width += embedding_dim
        self.cross = nn.ModuleList(LowRankMixtureCrossLayer(width, config.low_rank, config.experts)
                                   if config.low_rank else CrossLayer(width) for _ in range(config.cross_layers))
        layers: list[nn.Module] = []
        size = width
        for hidden in config.deep_layers:
            layers += [nn.Linear(size, hidden), nn.ReLU(), nn.Dropout(dropout)]
            size = hidden
        self.deep = nn.Sequential(*layers)
        self.output = nn.Linear(size if config.structure == "stacked" else size + width, 1)
        self.cross_width = width

    @staticmethod
    def _pooled(vectors: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Mean of the non-padding vectors of each row (zeros for an empty list)."""
        mask = (ids != PAD).unsqueeze(-1).to(vectors.dtype)
        return (vectors * mask).sum(1) / mask.sum(1).clamp(min=1)

    def embed(self, fields: torch.Tensor, genres: torch.Tensor, history: torch.Tensor,
              history_rating_codes: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        parts = [e[f](fields[:, k]) for k, f in enumerate(SINGLE_FIELDS)]
        parts.append(self._pooled(e["genres"](genres), genres))
        # each history item is its item embedding plus the embedding of the rating the user gave it
        parts.append(self._pooled(e["item_id"](history) + e["rating"](history_rating_codes), history))
        if self.item_text is not None:
            parts.append(self.item_text(fields[:, ITEM_COLUMN]))
        return torch.cat(parts, dim=-1)

    def forward(self, fields: torch.Tensor, genres: torch.Tensor, history: torch.Tensor,
                history_rating_codes: torch.Tensor, return_cross: bool = False):
        """Logit of "like" per row ([B]); with `return_cross`, also every cross layer's output ([B, width] each)."""
        x0 = self.embed(fields, genres, history, history_rating_codes)
        x, crossed = x0, []
        for layer in self.cross:
            x = layer(x0, x)
            crossed.append(x)
        if self.config.structure == "stacked":
            logit = self.output(self.deep(x))
        else:
            logit = self.output(torch.cat([x, self.deep(x0)], dim=-1))
        logit = logit.squeeze(-1)
        return (logit, crossed) if return_cross else logit


def _padded(lists: list[list[int]]) -> torch.Tensor:
    width = max([len(x) for x in lists] + [1])
    out = torch.zeros((len(lists), width), dtype=torch.long)
    for row, values in enumerate(lists):
        if values:
            out[row, :len(values)] = torch.tensor(values)
    return out


def crm_batch(records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Encoded records (`CtrVocab.records`) -> tensors: fields [B, F], genres / history padded with 0, label."""
    return {"fields": torch.tensor([r["fields"] for r in records], dtype=torch.long),
            "genres": _padded([r["genres"] for r in records]), "history": _padded([r["history"] for r in records]),
            "history_rating_codes": _padded([r["history_rating_codes"] for r in records]),
            "label": torch.tensor([r["label"] for r in records], dtype=torch.float32)}


@torch.no_grad()
def crm_probabilities(model: DCNv2, records: list[dict[str, Any]], batch_size: int = 4096) -> np.ndarray:
    """P(like) per record, in eval mode (float64)."""
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(records), batch_size):
        batch = crm_batch(records[start:start + batch_size])
        logit = model(*(batch[k].to(device) for k in CRM_INPUTS))
        out.append(torch.sigmoid(logit.float()).cpu().numpy().astype(np.float64))
    model.train(was_training)
    return np.concatenate(out) if out else np.empty(0)


# ---------------------------------------------------------------- the published artifact
def save_crm(state: dict[str, torch.Tensor], shape: dict[str, Any], vocab: CtrVocab, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / MODEL_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps({**shape, "vocab_hash": vocab.fingerprint()}, indent=1))
    vocab.save(folder / VOCAB_FILE)


def read_crm_config(folder: str | Path, expect_vocab: str | None = None) -> tuple[dict[str, Any], CtrVocab]:
    """A published CRM's shape and vocabulary, checked against each other, without reading its weights.
    `expect_vocab`: the vocabulary hash the caller's data or routing config was made with; another is refused."""
    folder = Path(folder)
    for name in (MODEL_FILE, CONFIG_FILE, VOCAB_FILE):
        if not (folder / name).is_file():
            raise RaylibError(f"CRM folder {folder} lacks {name}.")
    config = json.loads((folder / CONFIG_FILE).read_text())
    vocab = CtrVocab.load(folder / VOCAB_FILE)
    if config.pop("vocab_hash", None) != vocab.fingerprint():
        raise RaylibError(f"CRM {folder}: its config.json and vocab.json were made with different vocabularies.")
    if expect_vocab is not None and expect_vocab != vocab.fingerprint():
        raise RaylibError(f"CRM {folder} was trained with vocabulary {vocab.fingerprint()[:12]}, but the data / "
                          f"routing config uses {expect_vocab[:12]}: they come from different runs.")
    return config, vocab


def load_crm(folder: str | Path, expect_vocab: str | None = None) -> tuple[DCNv2, CtrVocab]:
    """A published CRM (safetensors, JSON) in fp32 on the CPU, in eval mode, and its vocabulary (checked as
    `read_crm_config` checks it). fp32 always: CoReLLa routes by the CRM's entropy, which lower precision moves."""
    from safetensors.torch import load_file

    from raylib.placement import note_weights_loaded

    config, vocab = read_crm_config(folder, expect_vocab)
    note_weights_loaded("crm", "cpu")
    model = DCNv2(DCNv2Config.from_dict(config, where=f"CRM {folder}"))
    model.load_state_dict(load_file(str(Path(folder) / MODEL_FILE)))
    return model.float().eval(), vocab


# ------------------------------------------------------------------ training it (a task of raylib.train)
class CrmTask(WholeModelCheckpoints):
    task_id: ClassVar[str] = "crm"  # in run fingerprints: a stable name, whatever module holds the class
    name: ClassVar[str] = "crm"  # checkpoint files and the published folder (`whole_model`)
    config_cls: ClassVar[type] = CrmJobConfig
    metric: ClassVar[str] = "auc"
    higher_is_better: ClassVar[bool] = True
    companions: ClassVar[tuple[str, ...]] = (VOCAB_FILE,)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.vocab_hash = CtrVocab.load(self.job.vocab).fingerprint() if self.job.vocab else None

    def build(self) -> torch.nn.Module:
        model = DCNv2(DCNv2Config.from_dict(self.job.crm_shape))
        if self.job.item_text:
            model.item_text.fill(load_table(self.job.item_text))
        return model.to(self.ctx.device, torch.float32)

    def encode(self, records: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
        return records  # already field indices; collate pads them

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return crm_batch(items)

    def loss(self, module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logit = module(*(batch[k] for k in CRM_INPUTS))
        return F.binary_cross_entropy_with_logits(logit.float(), batch["label"])

    @torch.no_grad()
    def validate(self, module, items: list[dict[str, Any]]) -> dict[str, float]:
        def probs(batch: list[dict[str, Any]]) -> list[float]:
            t = {k: v.to(self.ctx.device) for k, v in crm_batch(batch).items()}
            return torch.sigmoid(module(*(t[k] for k in CRM_INPUTS)).float()).cpu().tolist()

        module.eval()
        values = sharded_map(items, probs, self.job.train.eval_batch_size, self.ctx)
        module.train()
        return binary_report([i["label"] for i in items], values)

    def shape(self) -> dict[str, Any]:
        """DCNv2's arguments, and the hash of the vocabulary its field indices come from (`read_crm_config`)."""
        return {**self.job.crm_shape, **({"vocab_hash": self.vocab_hash} if self.vocab_hash else {})}

    def write(self, module, latest, best, folder: Path) -> None:
        import shutil

        super().write(module, latest, best, folder)
        if self.job.vocab:
            shutil.copyfile(self.job.vocab, folder / VOCAB_FILE)

    @classmethod
    def fingerprint(cls, job) -> dict[str, Any]:
        settings = {k: v for k, v in to_dict(job.crm).items() if k not in RUN_LENGTH_FIELDS}
        found = {"crm": settings, "crm_shape": job.crm_shape}
        if job.item_text:  # only then: a plain run keeps the fingerprint it had before item text existed
            from raylib.stages import file_sha1

            found["item_text"] = file_sha1(job.item_text)
        return found
