"""Accuracy on hand-made logits: top-k, the confusion matrix, per-class accuracy, Epic's action
accuracy (verb and noun both right; top-5 over pairs) and multi-view averaging."""

from __future__ import annotations

import math

import pytest
import torch

from mofo.training.metrics import (
    action_correct,
    average_views,
    confusion_matrix,
    per_class_accuracy,
    summary,
    topk_correct,
)

LOGITS = torch.tensor([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0], [1.0, 3.0, 2.0], [2.0, 0.5, 1.0]])
LABELS = torch.tensor([0, 1, 2, 2])


def test_topk():
    assert topk_correct(LOGITS, LABELS, 1).tolist() == [True, False, False, False]
    assert topk_correct(LOGITS, LABELS, 2).tolist() == [True, True, True, True]
    assert topk_correct(LOGITS, LABELS, 5).all()  # k above the class count: every class
    with pytest.raises(ValueError, match=r"need logits \(N, C\) and labels \(N,\), got \(3,\)"):
        topk_correct(LOGITS[0], LABELS[:1], 1)


def test_confusion_matrix_and_per_class_accuracy():
    matrix = confusion_matrix(LOGITS, LABELS, 4)
    assert matrix.tolist() == [[1, 0, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    accuracy = per_class_accuracy(matrix)
    assert accuracy[:3].tolist() == [1.0, 0.0, 0.0] and math.isnan(accuracy[3])


def test_action_needs_verb_and_noun_and_top5_ranks_pairs():
    verbs = torch.tensor([[5.0, 0.0], [5.0, 0.0]])  # both clips: verb 0, surely
    nouns = torch.tensor([[4.0, 3.9, 0.0], [0.0, 4.0, 0.0]])
    truth_v, truth_n = torch.tensor([0, 1]), torch.tensor([1, 1])
    assert action_correct(verbs, nouns, truth_v, truth_n, 1).tolist() == [False, False]
    # Clip 0: pair (0, 1) is the second best of 6; clip 1: verb 1 is unlikely, but (1, 1) is
    # still among the 5 best of 6 pairs.
    assert action_correct(verbs, nouns, truth_v, truth_n, 2).tolist() == [True, False]
    assert action_correct(verbs, nouns, truth_v, truth_n, 5).tolist() == [True, True]
    out = summary({"verb": verbs, "noun": nouns}, {"verb": truth_v, "noun": truth_n})
    assert out["verb_top1"] == 50.0 and out["noun_top1"] == 50.0 and out["action_top1"] == 0.0
    assert out["action_top5"] == 100.0


def test_views_average_their_probabilities():
    views = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 3.0]])  # 2 clips x 2 views
    averaged = average_views(views, 2)
    first = (views[:2].softmax(1).mean(0)).log()
    assert torch.allclose(averaged[0], first) and averaged.argmax(1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="not a whole number of 3-view clips"):
        average_views(views, 3)
