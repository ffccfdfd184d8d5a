"""The views are columns now (users' timelines, `raylib.data.timelines`), and still the very views they were:
each view of the embedded MovieLens-100K hashes to what the per-row Python builders made before (the hashes
below were taken from that code), so every method trains, validates and tests on the same rows in the same
order, and caches keyed on their content stay valid."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from raylib.config import from_dict

BEFORE = {  # sha1(JSON of the view)[:16], computed with the row-by-row builders the columns replaced
    "windows.train": "de4f3bb0eaca4069", "windows.valid": "470c3b9cf8014111", "windows.test": "c178b5fa9450c416",
    "windows.valid_held": "27f857dc3d3c3268", "catalogue": "c037e43063bf891d",
    "sasrec.train": "48b006b6439b8f0d",
    "tallrec.train": "5df3d06efc32c930", "tallrec.valid": "b610b7dafa5886e6", "tallrec.test": "d3e66554e149aba0",
    "tallrec.dataset.train": "e0ae3523af0648b1", "tallrec.dataset.test": "0092dd8c38a7f200",
    "ctr.train": "59cbfeaa377c7fe5", "ctr.dataset.test": "b15b3e6308ff1bba",
    "vocab": "47bb3effaf3ce08a12350841b2796c401a60e8c2", "ctr_records.train": "d91826a86f1ebe4e",
    "ctr_records.test_with_text": "bfd5437ee9f1c67c", "corella.joint_train": "45301b8b434e3674",
    "corella.test": "e6cac6980103309b", "cocktail.action.pools": "58bfdeac07f75094",
    "cocktail.action.warm_cold": "b5dc2202133aa3a4",
}


def digest(value) -> str:
    def plain(o):
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=plain).encode()).hexdigest()[:16]


def test_next_item_windows_and_sasrec_records_are_unchanged():
    from raylib.methods.nextitem.config import SequenceDataConfig
    from raylib.methods.nextitem.pipeline import load_sequence_data
    from raylib.methods.nextitem.sasrec import window_records

    data = load_sequence_data(SequenceDataConfig())
    for split in ("train", "valid", "test", "valid_held"):
        assert digest([dataclasses.asdict(w) for w in getattr(data, split)]) == BEFORE[f"windows.{split}"], split
    c = data.catalogue
    assert digest([c.item_ids, c.titles, c.popularity.tolist()]) == BEFORE["catalogue"]
    assert digest(window_records(data.train, c, 10)) == BEFORE["sasrec.train"]


def test_tallrec_records_are_unchanged():
    from raylib.methods.tallrec.config import DataConfig
    from raylib.methods.tallrec.pipeline import load_tallrec_data

    data = load_tallrec_data(DataConfig())
    for split in ("train", "valid", "test"):
        assert digest(list(getattr(data, split))) == BEFORE[f"tallrec.{split}"], split
    by_time = load_tallrec_data(from_dict(DataConfig, {"dataset": "ml-100k"}))
    assert digest(list(by_time.train)) == BEFORE["tallrec.dataset.train"]
    assert digest(list(by_time.test)) == BEFORE["tallrec.dataset.test"]


# CTR records' keys as the row-by-row builders named them (the values are what the digests pin)
RECORD_KEYS_THEN = {"history_rating_codes": "history_ratings", "history_ratings": "history_scores"}


def keys_then(records: list[dict]) -> list[dict]:
    return [{RECORD_KEYS_THEN.get(k, k): v for k, v in r.items()} for r in records]


def test_ctr_samples_vocabulary_and_corella_views_are_unchanged():
    from raylib.data.ctr import CtrVocab, load_ctr_data
    from raylib.methods.corella.config import CorellaJobConfig, CtrDataConfig
    from raylib.methods.corella.pipeline import prepare_views

    job = CorellaJobConfig()
    data = load_ctr_data(job.data)
    assert digest(data.train.table().to_pylist()) == BEFORE["ctr.train"]
    vocab = CtrVocab.build(data.train, data.features)
    assert vocab.fingerprint() == BEFORE["vocab"]
    assert digest(keys_then(vocab.records(data.train))) == BEFORE["ctr_records.train"]
    assert digest(keys_then(vocab.records(data.test, with_text=True))) == BEFORE["ctr_records.test_with_text"]
    views = prepare_views(job, data)
    assert digest(keys_then(views.joint_train)) == BEFORE["corella.joint_train"]
    assert digest(keys_then(views.test)) == BEFORE["corella.test"]
    by_time = load_ctr_data(from_dict(CtrDataConfig, {"dataset": "ml-100k"}))
    assert digest(by_time.test.table().to_pylist()) == BEFORE["ctr.dataset.test"]


@pytest.mark.parametrize("domain", ["action"])
def test_cocktail_pools_and_cold_start_records_are_unchanged(domain):
    from raylib.config import load_config
    from raylib.methods.cocktail.config import CocktailJobConfig
    from raylib.methods.cocktail.domains import load_domain, three_pools, warm_cold
    from raylib.assets import PROJECT_DIR

    job = load_config(CocktailJobConfig, PROJECT_DIR / "jobs" / "configs" / "cocktail_cpu.yaml", [])
    splits = load_domain(next(d for d in job.domains if d.name == domain), job.data)
    pools = three_pools(splits.train, 42)
    assert digest([list(pools.base), list(pools.ingredient), list(pools.unlabelled)]) == \
        BEFORE[f"cocktail.{domain}.pools"]
    warm, cold = warm_cold(splits.test, list(pools.ingredient[:64]), 100, 1)
    assert digest([list(warm), list(cold)]) == BEFORE[f"cocktail.{domain}.warm_cold"]
