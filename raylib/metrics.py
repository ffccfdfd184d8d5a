"""Metrics. Binary (TALLRec / CoReLLa): AUC (Mann-Whitney, equal to scikit-learn's), LogLoss and accuracy (by
scikit-learn). Ranking (one true item per query, e.g. BIGRec-style next-item recommendation): HR@K and NDCG@K
from the true item's rank."""

from __future__ import annotations

import numpy as np

from raylib import RaylibError


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape or y.size == 0:
        raise RaylibError(f"labels ({y.size}) and scores ({s.size}) must be non-empty and the same length.")
    if not np.isin(y, (0.0, 1.0)).all():
        raise RaylibError("labels must be 0 (dislike) or 1 (like).")
    if not np.isfinite(s).all():
        raise RaylibError("scores must be finite numbers (got NaN or inf).")
    return y.astype(np.int64), s


def auc(labels, scores) -> float:
    """ROC AUC as the Mann-Whitney statistic: the chance a liked record outscores a disliked one, tied scores
    counting one half (what scikit-learn's roc_auc_score gives, a test checks; ~20x faster on a few hundred
    records, which the bootstrap intervals call thousands of times)."""
    y, s = _check(labels, scores)
    if y.min() == y.max():
        raise RaylibError("AUC needs both positive and negative labels.")
    from scipy.stats import rankdata  # scikit-learn's own dependency

    positives = int(y.sum())
    negatives = y.size - positives
    rank_sum = float(rankdata(s)[y == 1].sum())  # mid-ranks: ties count one half
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def log_loss(labels, probabilities, eps: float = 1e-7) -> float:
    """Binary cross-entropy; probabilities are clipped to [eps, 1 - eps] first (an fp32 softmax can give exactly
    0 or 1), which caps one record's loss at -log(eps) ~ 16.1."""
    y, p = _check(labels, probabilities)
    from sklearn import metrics as skm

    return float(skm.log_loss(y, np.clip(p, eps, 1 - eps), labels=[0, 1]))


def accuracy(labels, probabilities, threshold: float = 0.5) -> float:
    """Share of records whose prediction (probability >= threshold means "like") matches the label."""
    y, p = _check(labels, probabilities)
    from sklearn import metrics as skm

    return float(skm.accuracy_score(y, (p >= threshold).astype(np.int64)))


def binary_report(labels, probabilities) -> dict[str, float]:
    return {"auc": auc(labels, probabilities), "logloss": log_loss(labels, probabilities),
            "accuracy": accuracy(labels, probabilities)}


def _ranks(ranks, k: int) -> np.ndarray:
    r = np.asarray(ranks, dtype=np.float64).ravel()
    if r.size == 0:
        raise RaylibError("ranking metrics need at least one query.")
    if not (np.isfinite(r).all() and (r >= 1).all() and (r == np.floor(r)).all()):
        raise RaylibError("ranks must be 1-based whole numbers (1 = the true item came first).")
    if int(k) != k or k < 1:
        raise RaylibError(f"K must be a whole number >= 1 (got {k!r}).")
    return r


def hit_rate_at_k(ranks, k: int) -> float:
    """HR@K: share of queries whose true item is ranked within the top K."""
    r = _ranks(ranks, k)
    return float(np.mean(r <= k))


def ndcg_at_k(ranks, k: int) -> float:
    """NDCG@K with one relevant item per query: 1 / log2(rank + 1) inside the top K, else 0 (the ideal DCG is 1)."""
    r = _ranks(ranks, k)
    return float(np.mean(np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)))


def ranking_report(ranks, ks=(1, 3, 5, 10, 20)) -> dict[str, float]:
    """{"hr@K": ..., "ndcg@K": ...} for every K in `ks`."""
    report: dict[str, float] = {}
    for k in ks:
        report[f"hr@{k}"] = hit_rate_at_k(ranks, k)
        report[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    return report


def ndcg_gains(ranks, k: int) -> np.ndarray:
    """Each query's NDCG@K (one relevant item): the values `ndcg_at_k` averages, for paired comparisons."""
    r = _ranks(ranks, k)
    return np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)


def _resamples(n: int, labels: np.ndarray | None, rounds: int, seed: int):
    """`rounds` resamples (indices, with replacement) of n items; with `labels`, those holding one label only are
    skipped (an AUC needs both)."""
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        index = rng.integers(0, n, n)
        if labels is None or len(np.unique(labels[index])) == 2:
            yield index


def _interval(values: list[float], level: float) -> list[float]:
    tail = 100 * (1 - level) / 2
    return [float(v) for v in np.percentile(values, [tail, 100 - tail])]


def _statistic(statistic, labels: np.ndarray | None):
    """statistic of (values, index): of the values alone, or of (labels, values) such as `auc`."""
    return lambda v, i: statistic(v[i]) if labels is None else statistic(labels[i], v[i])


def bootstrap_interval(values, statistic=np.mean, labels=None, rounds: int = 2000, seed: int = 0,
                       level: float = 0.95) -> list[float]:
    """statistic(values)'s `level` percentile interval over `rounds` resamples of the items: per-item values (e.g.
    `ndcg_gains`) with `statistic=np.mean`, or per-item scores with `labels` and a statistic such as `auc`."""
    a = np.asarray(values, dtype=np.float64)
    y = None if labels is None else np.asarray(labels)
    stat = _statistic(statistic, y)
    return _interval([stat(a, index) for index in _resamples(len(a), y, rounds, seed)], level)


def paired_bootstrap(a, b, statistic=np.mean, labels=None, rounds: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float | list[float]]:
    """statistic(a) - statistic(b) on the same test items, with its `level` percentile interval over `rounds`
    resamples of the items (the same resample for both, so what the two share cancels out). `a`, `b`: per-item
    values (e.g. `ndcg_gains`) with `statistic=np.mean`, or per-item scores with `labels` and a statistic of
    (labels, scores) such as `auc`."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise RaylibError(f"paired values must have one shape and at least one item (got {a.shape}, {b.shape}).")
    y = None if labels is None else np.asarray(labels)
    stat = _statistic(statistic, y)
    everything = np.arange(len(a))
    diffs = [stat(a, index) - stat(b, index) for index in _resamples(len(a), y, rounds, seed)]
    return {"diff": float(stat(a, everything) - stat(b, everything)), "ci": _interval(diffs, level),
            "rounds": len(diffs)}
