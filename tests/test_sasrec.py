"""SASRec, the sequential baseline, trains through the same Ray Train loop as the LLM tasks."""

from __future__ import annotations

import numpy as np
import torch

from raylib.config import SasrecSettings
from raylib.data.sequences import Catalogue, NextItemWindow
from raylib.sasrec import SASRec, history_tensor, load_sasrec, sasrec_scores, train_sasrec, window_records


def test_scores_every_item_and_an_empty_history_stays_finite():
    model = SASRec(num_items=7, max_len=4, hidden_size=8).eval()
    history = history_tensor([[0, 1, 2], [], [3]], max_len=4)
    assert history.tolist() == [[0, 1, 2, 3], [0, 0, 0, 0], [0, 0, 0, 4]]  # left-padded, index + 1
    scores = model(history)
    assert scores.shape == (3, 7) and torch.isfinite(scores).all()


def test_learns_a_pattern_through_ray_train_and_reloads(ray_session, tmp_path):
    """30 items where item i is always followed by item i+1: a few epochs put the next item in the top 10."""
    n = 30
    catalogue = Catalogue([str(i) for i in range(n)], [f"Item {i}" for i in range(n)], np.ones(n))
    rng = np.random.default_rng(0)
    windows = []
    for u in range(300):
        start = int(rng.integers(0, n - 6))
        seq = [str(i) for i in range(start, start + 6)]
        windows.append(NextItemWindow(str(u), tuple(seq[:-1]), seq[-1], u))
    settings = SasrecSettings(hidden_size=16, epochs=4, batch_size=32, learning_rate=1e-2, patience=0)
    folder = train_sasrec(settings, windows[:240], windows[240:], catalogue, tmp_path / "run", history_len=5)
    model = load_sasrec(folder)
    records = window_records(windows[240:], catalogue, 5)
    scores = sasrec_scores(model, records)
    ranks = 1 + (scores > scores[np.arange(len(records)), [r["target"] for r in records]][:, None]).sum(1)
    assert np.mean(ranks <= 10) > 0.8  # random would be 10/30
    assert np.allclose(sasrec_scores(load_sasrec(folder), records), scores)  # safetensors round trip
