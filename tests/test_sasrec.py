"""SASRec, the sequential baseline, is one more task of the shared Ray Train loop: the model scores every catalogue
item, trains on Ray Train workers, and its published folder (safetensors + JSON) reloads to the same scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pyarrow as pa
import torch

from raylib.methods.nextitem.config import SasrecSettings
from raylib.data.sequences import Catalogue, Windows, user_sequences
from raylib.metrics import ranking_report
from raylib.methods.nextitem.sasrec import SASRec, history_tensor, load_sasrec, sasrec_scores, train_sasrec, window_records


def test_scores_every_item_and_an_empty_history_stays_finite():
    model = SASRec(num_items=7, history_len=4, hidden_size=8, num_heads=2)
    history = history_tensor([[0, 1, 2], [], [3, 4, 5, 6, 0]], history_len=4)
    # id = catalogue index + 1, left-padded with 0; a longer history keeps its most recent items
    assert history.tolist() == [[0, 1, 2, 3], [0, 0, 0, 0], [5, 6, 7, 1]]
    for training in (True, False):  # dropout on and off: an all-padding row still gives finite scores
        scores = model.train(training)(history)
        assert scores.shape == (3, 7) and torch.isfinite(scores).all()


def successor_windows(n_items: int, count: int, seed: int) -> Windows:
    """Item i is always followed by item i + 1 (mod n): each user has 1-5 consecutive items, then the next one,
    the target of the user's one window."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(count):
        start, length = int(rng.integers(n_items)), int(rng.integers(1, 6))
        rows += [(f"u{seed}-{user}", str((start + k) % n_items), k) for k in range(length + 1)]
    users, items, stamps = zip(*rows)
    timelines = user_sequences(pa.table({"user_id": users, "item_id": items, "timestamp": pa.array(stamps, pa.int64())}),
                               {str(i): str(i) for i in range(n_items)})
    return Windows(timelines, timelines.offsets[1:] - 1, history_len=10)  # each user's last item is the target


# slow tier: the leaderboard test trains SASRec through Ray Train three times (plain, on a budget, with title
# vectors) and ranks with the published models; this one also checks what it learned and its best epoch
@pytest.mark.slow
def test_learns_through_ray_train_and_the_published_model_reloads(ray_session, tmp_path):
    n = 30
    catalogue = Catalogue([str(i) for i in range(n)], [f"Item {i}" for i in range(n)], np.ones(n))
    train, valid = successor_windows(n, 240, seed=0), successor_windows(n, 60, seed=1)
    settings = SasrecSettings(hidden_size=16, epochs=3, batch_size=32, learning_rate=1e-2, patience=0)

    folder = train_sasrec(settings, train, valid, catalogue, tmp_path / "run", history_len=5)

    records = window_records(valid, catalogue, history_len=5)
    scores = sasrec_scores(load_sasrec(folder), records)
    assert scores.shape == (60, n) and scores.dtype == np.float32
    ranks = 1 + (scores > scores[np.arange(60), [r["target"] for r in records]][:, None]).sum(1)
    report = ranking_report(ranks, (10,))
    assert report["hr@10"] > 0.7  # random: 10 / 30 (this run: 0.85)
    # The reloaded weights are the best epoch's: they reproduce the validation NDCG@10 the workers measured.
    summary = json.loads((folder / "training_summary.json").read_text())
    assert summary["metric"] == "ndcg@10" and abs(summary["best_metric"] - report["ndcg@10"]) < 1e-6
    assert json.loads((folder / "config.json").read_text())["num_items"] == n

    # The same call again finds the finished run in output_dir (same fingerprint) and returns it untrained.
    before = (folder / "model.safetensors").read_bytes()
    assert train_sasrec(settings, train, valid, catalogue, tmp_path / "run", history_len=5) == folder
    assert (folder / "model.safetensors").read_bytes() == before
