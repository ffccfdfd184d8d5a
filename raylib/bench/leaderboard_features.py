"""The leaderboard's LLM-as-feature rows: the conventional models with the LLM's item-title embeddings as an item
feature (`raylib.item_text`), trained like their plain rows, so the table shows what the LLM adds as a feature
encoder next to what it does as the recommender.

The embeddings are the ones BIGRec's grounding computes for the catalogue (the base model, pooled as
`grounding.pooling`, cached by `nextitem.pipeline.catalogue_embedding`), written once as the exchange Parquet.
  dcnv2_llm_emb    DCNv2, CoReLLa's stage-1 recipe, on every training CTR row, the target item's title vector as
                   one more field; scored on the preference sample's CTR rows.
  sasrec_llm_emb   SASRec, the BIGRec benchmark's recipe, on every training window, each item's vector its id
                   embedding plus its projected title vector; ranks the test windows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from raylib.methods.corella.artifacts import STAGE_DIRS

EMBEDDINGS_FILE = "llm_item_embeddings.parquet"
FEATURES = "titles (LLM embeddings)"  # what these rows read beyond their plain versions


def item_embeddings(bigrec_job, data, out: Path) -> Path:
    """The catalogue's title embeddings as BIGRec's grounding computes them, as `<out>/llm_item_embeddings.parquet`
    (the embedding cache makes a rerun cheap)."""
    from raylib.item_text import write_embeddings
    from raylib.methods.nextitem.pipeline import catalogue_embedding

    vectors = catalogue_embedding(bigrec_job, data.catalogue)
    return write_embeddings(out / EMBEDDINGS_FILE, data.catalogue.item_ids, vectors)


def dcnv2_row(corella_job, ctr, sample: dict[str, Any], sample_rows, embeddings: Path, out: Path):
    """(DCNv2 + title vectors: its probabilities on the sample and its costs)."""
    from raylib.bench.leaderboard_budgets import dcnv2_scores

    folder = out / "dcnv2_llm_emb"
    scored = dcnv2_scores(corella_job, ctr, ctr.train, sample, sample_rows, folder, item_text=embeddings)
    return scored["probabilities"], {"seconds": scored.get("seconds")}, folder / "dcnv2" / STAGE_DIRS["crm"]


def sasrec_ranks(bigrec_job, data, embeddings: Path, out: Path) -> tuple[np.ndarray, Path]:
    """(SASRec + title vectors: its test ranks, its training folder), kept under the embeddings, the SASRec
    recipe and the data."""
    from raylib.config import to_dict
    from raylib.methods.nextitem.pipeline import data_key, sasrec_ranks as ranks_of
    from raylib.stages import cached_stage, file_sha1

    folder = out / "sasrec_llm_emb"

    def compute() -> dict[str, Any]:
        ranks = ranks_of(bigrec_job, data, data.train, folder, item_text=embeddings)[0]
        return {"ranks": np.asarray(ranks).tolist()}

    key = {"embeddings": file_sha1(embeddings), "sasrec": to_dict(bigrec_job.sasrec), "data": data_key(bigrec_job.data)}
    found = cached_stage(out / "stages" / "sasrec_llm_emb.json", key, compute)
    return np.asarray(found["ranks"]), folder
