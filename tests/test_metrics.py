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
