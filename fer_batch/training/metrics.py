"""Classification metrics shared by training (model selection) and `fer evaluate`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ClassificationReport:
    class_names: tuple[str, ...]
    confusion: np.ndarray  # rows: true class, columns: predicted class
    accuracy: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray

    @property
    def macro_f1(self) -> float:
        return float(self.f1.mean())

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "count": int(self.support.sum()),
            "per_class": {
                name: {
                    "precision": float(self.precision[i]),
                    "recall": float(self.recall[i]),
                    "f1": float(self.f1[i]),
                    "support": int(self.support[i]),
                }
                for i, name in enumerate(self.class_names)
            },
            "confusion_matrix": self.confusion.tolist(),
            "class_names": list(self.class_names),
        }


def classification_report(
    true_labels: np.ndarray, predicted_labels: np.ndarray, class_names: tuple[str, ...]
) -> ClassificationReport:
    classes = len(class_names)
    true_labels = np.asarray(true_labels, dtype=np.int64)
    predicted_labels = np.asarray(predicted_labels, dtype=np.int64)
    confusion = np.bincount(true_labels * classes + predicted_labels, minlength=classes * classes).reshape(
        classes, classes
    )
    true_positive = np.diag(confusion).astype(np.float64)
    predicted_count = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_count > 0, true_positive / predicted_count, 0.0)
        recall = np.where(support > 0, true_positive / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    accuracy = float(true_positive.sum() / max(1, confusion.sum()))
    return ClassificationReport(class_names, confusion, accuracy, precision, recall, f1, support)


def flicker_per_100(predicted_sequences: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Label changes between consecutive frames per 100 frames, for (clips, frames) labels; with
    `valid` (a prefix of each row, as `TrackedClips` give), only the valid frames count."""
    sequences = np.asarray(predicted_sequences)
    valid = np.ones(sequences.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    changes = ((sequences[:, 1:] != sequences[:, :-1]) & valid[:, 1:]).sum()
    return float(100.0 * changes / max(1, valid.sum()))
