"""Accuracy as the papers report it, from logits gathered over an evaluation split.

- ``topk_correct``: whether each clip's class is among its k best-scored classes.
- ``per_class_accuracy`` and ``confusion_matrix``: from top-1 predictions.
- Epic-Kitchens' action accuracy: a clip counts when both its verb and its noun are right
  (top-1), and for top-5 when the (verb, noun) pair is among the 5 best pairs, pairs scored by
  the product of the verb and noun probabilities (the dataset's evaluation).
- ``average_views``: multi-view testing averages the softmax of a clip's views (clips × crops).
"""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) bool: the label is among the ``k`` highest logits (k capped at the class count)."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"need logits (N, C) and labels (N,), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices  # (N, k)
    return (top == labels[:, None]).any(dim=1)


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes, classes) counts: row = true class, column = predicted class (top-1)."""
    predicted = logits.argmax(dim=1)
    flat = labels.long() * classes + predicted
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def per_class_accuracy(matrix: torch.Tensor) -> torch.Tensor:
    """(classes,) top-1 accuracy of each true class; NaN for classes with no clip."""
    total = matrix.sum(dim=1).double()
    return torch.where(total > 0, matrix.diagonal().double() / total.clamp(min=1), float("nan"))


def action_correct(
    verb_logits: torch.Tensor,
    noun_logits: torch.Tensor,
    verbs: torch.Tensor,
    nouns: torch.Tensor,
    k: int = 1,
) -> torch.Tensor:
    """(N,) bool: the true (verb, noun) pair is among the ``k`` most probable pairs, a pair
    scored by P(verb) · P(noun)."""
    pair = verb_logits.softmax(1)[:, :, None] * noun_logits.softmax(1)[:, None, :]  # (N, V, Nn)
    flat_labels = verbs.long() * noun_logits.shape[1] + nouns.long()
    return topk_correct(pair.flatten(1), flat_labels, k)


def average_views(logits: torch.Tensor, views: int) -> torch.Tensor:
    """Logits of ``views`` consecutive rows per clip, (N · views, C) → the log of the mean
    softmax per clip (N, C), so top-k and argmax work on it as on logits."""
    if logits.shape[0] % views:
        raise ValueError(f"{logits.shape[0]} rows are not a whole number of {views}-view clips")
    probs = logits.softmax(dim=1).reshape(-1, views, logits.shape[1]).mean(dim=1)
    return probs.clamp(min=1e-12).log()


def summary(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> dict[str, float]:
    """Top-1 and top-5 in percent for each task, and Epic's action when verb and noun are both
    there."""
    out = {}
    for task, task_logits in logits.items():
        for k in (1, 5):
            out[f"{task}_top{k}"] = 100.0 * float(
                topk_correct(task_logits, labels[task], k).float().mean()
            )
    if {"verb", "noun"} <= logits.keys():
        for k in (1, 5):
            hit = action_correct(logits["verb"], logits["noun"], labels["verb"], labels["noun"], k)
            out[f"action_top{k}"] = 100.0 * float(hit.float().mean())
    return out
