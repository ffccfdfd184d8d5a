"""AUC / LogLoss / accuracy agree with scikit-learn, ties included."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from raylib import RaylibError
from raylib.metrics import accuracy, auc, binary_report
from raylib.metrics import log_loss as our_log_loss


def test_auc_matches_sklearn_on_yes_no_logits():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    yes_logit = rng.normal(size=500) + labels  # informative logits
    no_logit = rng.normal(size=500)
    p_yes = np.exp(yes_logit) / (np.exp(yes_logit) + np.exp(no_logit))
    assert auc(labels, p_yes) == pytest.approx(roc_auc_score(labels, p_yes), abs=1e-12)
    assert our_log_loss(labels, p_yes) == pytest.approx(log_loss(labels, p_yes), abs=1e-9)
    assert accuracy(labels, p_yes) == pytest.approx(accuracy_score(labels, p_yes >= 0.5))


def test_auc_with_ties_and_hand_checked_value():
    labels = [1, 0, 1, 0, 1]
    scores = [0.9, 0.9, 0.5, 0.1, 0.5]
    # pairs (pos, neg): 0.9>0.9 tie .5, 0.9>0.1 1, 0.5<0.9 0, 0.5>0.1 1, 0.5<0.9 0, 0.5>0.1 1 -> 3.5 / 6
    assert auc(labels, scores) == pytest.approx(3.5 / 6)
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_single_class_is_a_clear_error():
    with pytest.raises(RaylibError, match="both positive and negative"):
        binary_report([1, 1, 1], [0.2, 0.4, 0.9])


def test_sklearn_backed_metrics_equal_the_old_hand_values():
    labels = [1, 0, 1, 0, 1]
    probs = [0.9, 0.9, 0.5, 0.1, 0.5]
    # LogLoss by hand: -(log .9 + log .1 + log .5 + log .9 + log .5) / 5; accuracy: p >= 0.5 is "like" -> 4 of 5
    expected_logloss = -(2 * np.log(0.9) + np.log(0.1) + 2 * np.log(0.5)) / 5
    report = binary_report(labels, probs)
    assert report == pytest.approx({"auc": 3.5 / 6, "logloss": expected_logloss, "accuracy": 0.8})
    # probabilities of exactly 0 or 1 (an fp32 softmax can saturate) are clipped at 1e-7, as before
    assert our_log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-np.log(1e-7))


def test_length_mismatch_and_bad_labels_are_clear_errors():
    with pytest.raises(RaylibError, match="same length"):
        binary_report([1, 0, 1], [0.2, 0.4])
    with pytest.raises(RaylibError, match="same length"):
        auc([], [])
    with pytest.raises(RaylibError, match="0 .* or 1"):
        auc([1, 0, 2], [0.2, 0.4, 0.9])


def test_hit_rate_and_ndcg_hand_values():
    from raylib.metrics import hit_rate_at_k, ndcg_at_k

    ranks = np.array([1, 2, 11])
    assert hit_rate_at_k(ranks, 10) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranks, 10) == pytest.approx((1 + 1 / np.log2(3)) / 3)
    assert hit_rate_at_k(ranks, 1) == pytest.approx(1 / 3) and ndcg_at_k(ranks, 1) == pytest.approx(1 / 3)
    assert hit_rate_at_k(ranks, 11) == pytest.approx(1.0)
    assert ndcg_at_k(ranks, 20) == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(12)) / 3)
    assert ndcg_at_k([3], 5) == pytest.approx(0.5)  # 1 / log2(4)


def test_ranking_report_keys_and_errors():
    from raylib.metrics import ranking_report

    report = ranking_report([1, 2, 11])
    assert set(report) == {f"{m}@{k}" for m in ("hr", "ndcg") for k in (1, 3, 5, 10, 20)}
    assert report["hr@10"] == pytest.approx(2 / 3) and report["hr@20"] == 1.0
    assert ranking_report([4], ks=(3, 5)) == pytest.approx({"hr@3": 0.0, "ndcg@3": 0.0, "hr@5": 1.0,
                                                           "ndcg@5": 1 / np.log2(5)})
    for bad in ([0, 1], [1.5], []):
        with pytest.raises(RaylibError):
            ranking_report(bad)
    with pytest.raises(RaylibError, match="K must be"):
        ranking_report([1], ks=(0,))


def test_paired_bootstrap_interval_of_a_difference():
    """Paired: the same resampled windows for both methods. A clear gain has an interval above 0; equal methods
    an interval around 0; AUC works through `labels`."""
    from raylib.metrics import ndcg_at_k, ndcg_gains, paired_bootstrap

    better, worse = np.array([1, 2, 1, 3, 1, 2] * 20), np.array([5, 40, 2, 30, 11, 60] * 20)
    gain = paired_bootstrap(ndcg_gains(better, 10), ndcg_gains(worse, 10), rounds=500)
    assert gain["diff"] == pytest.approx(ndcg_at_k(better, 10) - ndcg_at_k(worse, 10))
    assert 0 < gain["ci"][0] <= gain["diff"] <= gain["ci"][1]
    same = paired_bootstrap(ndcg_gains(better, 10), ndcg_gains(better, 10), rounds=200)
    assert same == {"diff": 0.0, "ci": [0.0, 0.0], "rounds": 200}
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    good, noise = labels + rng.normal(0, 0.5, 300), rng.normal(0, 1, 300)
    result = paired_bootstrap(good, noise, statistic=auc, labels=labels, rounds=300)
    assert result["diff"] == pytest.approx(auc(labels, good) - auc(labels, noise)) and result["ci"][0] > 0
