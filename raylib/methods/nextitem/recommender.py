"""BIGRec top-K for serving: one base model, LoRA adapters loaded by id, grounding over the whole catalogue.

`publish_recommender` (called by `jobs.bigrec`) writes what a server needs next to nothing else:

    <output_dir>/recommender/
        recommender.json          base model, prompt domain, generation and grounding settings, tuned gamma
        catalogue.parquet         item_id, title, popularity (training period)
        catalogue.safetensors     every title's embedding under the BASE model (BIGRec Sec. 3.2)
        adapters/<id>/            PEFT adapters, `PeftModel.from_pretrained` format; the id names one per request

`Recommender` holds the base model once. Adapters join it by id (`load_adapter` / `unload_adapter`, PEFT's
multi-adapter API), so one replica serves any number of tuned variants without a model copy each; Ray Serve's
`@serve.multiplexed` decides which ids stay loaded (`raylib.serving.GeneratorDeployment`).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raylib import RaylibError

CONFIG_FILE = "recommender.json"
ADAPTER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class RecommenderConfig:
    model: str
    domain: str
    max_length: int
    num_beams: int
    max_new_tokens: int
    pooling: str
    dtype: str = "auto"
    gamma: float = 0.0  # popularity re-weighting (BIGRec Eq. 4), tuned on validation by jobs.bigrec
    constrained: bool = False  # generate only catalogue titles (`generation.constrained` of the job)
    catalogue_fingerprint: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> RecommenderConfig:
        return cls(**json.loads(path.read_text()))


def publish_recommender(target: Path, config: RecommenderConfig, catalogue, embeddings,
                        adapters: dict[str, Path]) -> Path:
    """Write the folder above (staged, then swapped in whole); `adapters`: id -> a PEFT adapter folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.torch import save_file

    from raylib.train.checkpoint import publish_folder

    staging = target.with_name(f".{target.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "adapters").mkdir(parents=True)
    for adapter_id, folder in adapters.items():
        if not ADAPTER_ID.match(adapter_id):
            raise RaylibError(f"Adapter id {adapter_id!r}: use letters, digits, '_', '.', '-' (at most 64).")
        shutil.copytree(folder, staging / "adapters" / adapter_id)
    pq.write_table(pa.table({"item_id": catalogue.item_ids, "title": catalogue.titles,
                             "popularity": np.asarray(catalogue.popularity, dtype=np.float64)}),
                   staging / "catalogue.parquet")
    save_file({"embeddings": embeddings.float().contiguous()}, str(staging / "catalogue.safetensors"))
    config.catalogue_fingerprint = catalogue.fingerprint()
    config.save(staging / CONFIG_FILE)
    published = publish_folder(staging, target)
    shutil.rmtree(staging, ignore_errors=True)
    return published


def check_recommender(folder: str | Path) -> RecommenderConfig:
    """The config of a published folder; a clear error saying how to make one when there is none."""
    folder = Path(folder).expanduser()
    if not (folder / CONFIG_FILE).is_file():
        raise RaylibError(f"No BIGRec recommender in {folder}: train one first, e.g. "
                          "`raylib train bigrec --config jobs/configs/bigrec_cpu.yaml` "
                          "(it is written to <output_dir>/recommender), then pass that folder.")
    for name in ("catalogue.parquet", "catalogue.safetensors"):
        if not (folder / name).is_file():
            raise RaylibError(f"{folder} has {CONFIG_FILE} but no {name}: publish it again with jobs.bigrec.")
    if not adapter_ids(folder):
        raise RaylibError(f"{folder / 'adapters'} holds no adapter.")
    return RecommenderConfig.load(folder / CONFIG_FILE)


def adapter_ids(folder: str | Path) -> list[str]:
    root = Path(folder).expanduser() / "adapters"
    return sorted(p.name for p in root.iterdir() if (p / "adapter_config.json").is_file()) if root.is_dir() else []


class UnknownItems(ValueError):
    """History item ids that are not in the catalogue (a request error, said as a 422)."""


class UnknownAdapter(LookupError):
    """An adapter id the folder does not hold (said as a 404)."""


class Recommender:
    """The base model once, adapters by id, and the published catalogue with its embeddings."""

    def __init__(self, folder: str | Path):
        import pyarrow.parquet as pq
        from safetensors.torch import load_file

        from raylib.config import ModelConfig
        from raylib.data.sequences import Catalogue
        from raylib.placement import choose_dtype, device
        from raylib.model import load_model, load_tokenizer

        self.folder = Path(folder).expanduser()
        self.config = check_recommender(self.folder)
        table = pq.read_table(self.folder / "catalogue.parquet").to_pydict()
        self.catalogue = Catalogue([str(i) for i in table["item_id"]], table["title"],
                                   np.asarray(table["popularity"], dtype=np.float64))
        if self.catalogue.fingerprint() != self.config.catalogue_fingerprint:
            raise RaylibError(f"{self.folder / 'catalogue.parquet'} is not the catalogue {CONFIG_FILE} names.")
        self.item_embeddings = load_file(str(self.folder / "catalogue.safetensors"))["embeddings"]
        if len(self.item_embeddings) != len(self.catalogue):
            raise RaylibError(f"{self.folder / 'catalogue.safetensors'} has {len(self.item_embeddings)} rows for "
                              f"{len(self.catalogue)} items: publish it again with jobs.bigrec.")
        model_config = ModelConfig(name=self.config.model, dtype=self.config.dtype)
        self.device = device()  # the replica's GPU when it was given one, else its CPU
        self.tokenizer = load_tokenizer(model_config)
        self.base = load_model(model_config, self.device, choose_dtype(self.config.dtype, self.device)).eval()
        self.model = None  # the PeftModel, once the first adapter is loaded
        self.loaded: set[str] = set()
        # One model, adapters loaded, evicted (Serve's LRU, from a pool thread) and generated with: one at a time.
        self.lock = threading.RLock()
        self._trie = None  # the catalogue's token trie, for constrained requests (`title_trie`)

    # ---- adapters by id (PEFT multi-adapter: one base model, LoRA weights per id)
    def load_adapter(self, adapter_id: str) -> str:
        path = self.folder / "adapters" / adapter_id
        if not ADAPTER_ID.match(adapter_id) or not (path / "adapter_config.json").is_file():
            raise UnknownAdapter(f"No adapter {adapter_id!r}; this service has {adapter_ids(self.folder)}.")
        with self.lock:
            return self._load(adapter_id, path)

    def _load(self, adapter_id: str, path: Path) -> str:
        from peft import PeftModel

        if adapter_id not in self.loaded:
            if self.model is None:
                self.model = PeftModel.from_pretrained(self.base, str(path), adapter_name=adapter_id).eval()
            else:
                self.model.load_adapter(str(path), adapter_name=adapter_id)
            self.loaded.add(adapter_id)
        return adapter_id

    def unload_adapter(self, adapter_id: str) -> None:
        with self.lock:
            if adapter_id in self.loaded and len(self.loaded) > 1:  # PEFT keeps at least one adapter
                if self.model.active_adapter == adapter_id:
                    self.model.set_adapter(next(a for a in self.loaded if a != adapter_id))
                self.model.delete_adapter(adapter_id)
                self.loaded.discard(adapter_id)

    def title_trie(self):
        """The token trie of the catalogue's answers (BIGRec's quoted titles), built on first use."""
        from raylib.generation import TokenTrie
        from raylib.methods.nextitem.task import BigrecTask
        from raylib.prompts import bigrec_prompt

        if self._trie is None:
            self._trie = TokenTrie.of_answers(self.tokenizer, [BigrecTask.answer(t) for t in self.catalogue.titles],
                                              bigrec_prompt([], self.config.domain))
        return self._trie

    # ---- BIGRec: generate a title, ground it over the whole catalogue
    def recommend(self, adapter_id: str, history: list[str], k: int, exclude_history: bool = True,
                  gamma: float | None = None, constrained: bool | None = None) -> dict[str, Any]:
        """Top-`k` items for a history of catalogue item ids (oldest first): the adapter's top beam, grounded by
        L2 to every title under the base model, re-weighted by `(1 + pop)^-gamma` (default: the tuned gamma);
        the history's own items left out unless `exclude_history=False`; with `constrained` (default: as
        published) the beams may only spell catalogue titles."""
        unknown = [i for i in history if i not in self.catalogue.index]
        if unknown:
            raise UnknownItems(f"history items not in the catalogue: {unknown[:5]}")
        with self.lock:
            return self._recommend(adapter_id, history, k, exclude_history, gamma, constrained)

    def _recommend(self, adapter_id: str, history: list[str], k: int, exclude_history: bool, gamma: float | None,
                   constrained: bool | None) -> dict[str, Any]:
        import torch

        from raylib.generation import beam_search
        from raylib.methods.nextitem.grounding import embed_texts, nearest_items
        from raylib.prompts import answer_text
        from raylib.methods.nextitem.task import fitted_prompt

        # at most the items left to recommend: a larger k would fill the answer with excluded (infinite) scores
        k = min(k, len(self.catalogue) - (len(set(history)) if exclude_history else 0))
        self.load_adapter(adapter_id)
        self.model.set_adapter(adapter_id)
        record = {"history": [self.catalogue.title(i) for i in history], "target": "", "template": -1}
        c = self.config
        prompt = fitted_prompt(self.tokenizer, record, c.max_length - c.max_new_tokens, c.domain, "request")
        use_trie = c.constrained if constrained is None else constrained
        beams = beam_search(self.model, self.tokenizer, [prompt], c.num_beams, c.max_new_tokens, 1,
                            progress=False, allowed=self.title_trie() if use_trie else None)[0]
        generated = answer_text(beams[0]) if beams else ""
        with self.model.disable_adapter(), torch.no_grad():  # grounding uses the BASE model (BIGRec Sec. 3.2)
            query = embed_texts(self.model.get_base_model(), self.tokenizer, [generated], progress=False,
                                pooling=c.pooling)
        gamma = c.gamma if gamma is None else gamma
        if k <= 0:  # the history is the whole catalogue
            return {"generated": generated, "adapter": adapter_id, "gamma": gamma, "items": []}
        # a running top-k over chunks of the catalogue: memory bounded by a chunk, whatever its size
        top, scores = nearest_items(query, self.item_embeddings, k,
                                    exclude=[{self.catalogue.index[i] for i in history}] if exclude_history else None,
                                    signal=self.catalogue.popularity if gamma else None, gamma=gamma)
        top, scores = top[0], dict(zip(top[0].tolist(), scores[0].tolist()))
        return {"generated": generated, "adapter": adapter_id, "gamma": gamma,
                "items": [{"item_id": self.catalogue.item_ids[i], "title": self.catalogue.titles[i],
                           "score": float(scores[i])} for i in top if np.isfinite(scores[i])]}
