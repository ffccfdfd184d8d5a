"""Binary-classification metrics for TALLRec / CoReLLa: AUC, LogLoss, accuracy (numpy only)."""

from __future__ import annotations

import numpy as np

from raylib import RaylibError


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape or y.size == 0:
        raise RaylibError(f"labels ({y.size}) and scores ({s.size}) must be non-empty and the same length.")
    return y, s


def auc(labels, scores) -> float:
    """ROC AUC via the Mann-Whitney U statistic with mid-ranks for ties (equals sklearn's roc_auc_score)."""
    y, s = _check(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise RaylibError("AUC needs both positive and negative labels.")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(y.size)
    start = 0
    while start < y.size:  # average ranks over runs of tied scores
        end = start
        while end + 1 < y.size and sorted_s[end + 1] == sorted_s[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels, probabilities, eps: float = 1e-7) -> float:
    y, p = _check(labels, probabilities)
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def accuracy(labels, probabilities, threshold: float = 0.5) -> float:
    y, p = _check(labels, probabilities)
    return float(np.mean((p >= threshold) == (y == 1)))


def binary_report(labels, probabilities) -> dict[str, float]:
    return {"auc": auc(labels, probabilities), "logloss": log_loss(labels, probabilities),
            "accuracy": accuracy(labels, probabilities)}
