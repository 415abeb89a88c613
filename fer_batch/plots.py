"""Figures for evaluation results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fer_batch.training.metrics import ClassificationReport  # noqa: E402


def confusion_matrix_png(report: ClassificationReport, path: Path) -> Path:
    """Counts and row-normalised (recall) confusion matrices side by side."""
    names = report.class_names
    counts = report.confusion
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for axis, matrix, title, fmt in (
        (axes[0], counts, "counts", "{:d}"),
        (axes[1], normalised, "row-normalised (recall)", "{:.2f}"),
    ):
        image = axis.imshow(matrix, cmap="Blues", vmin=0)
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
        axis.set_yticks(range(len(names)), names)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(title)
        threshold = matrix.max() / 2 if matrix.max() > 0 else 1
        for row in range(len(names)):
            for column in range(len(names)):
                value = matrix[row, column]
                axis.text(
                    column, row, fmt.format(int(value) if fmt == "{:d}" else value), ha="center", va="center",
                    color="white" if value > threshold else "black", fontsize=8,
                )
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    figure.suptitle(f"accuracy {report.accuracy:.2%}, macro-F1 {report.macro_f1:.3f}, n={int(report.support.sum())}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def per_class_bars_png(report: ClassificationReport, path: Path) -> Path:
    names = report.class_names
    positions = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(9, 4))
    width = 0.27
    for offset, values, label in (
        (-width, report.precision, "precision"),
        (0.0, report.recall, "recall"),
        (width, report.f1, "F1"),
    ):
        axis.bar(positions + offset, values, width, label=label)
    axis.set_xticks(positions, names)
    axis.set_ylim(0, 1)
    axis.set_ylabel("score")
    axis.legend(ncol=3, loc="upper center", bbox_to_anchor=(0.5, 1.15))
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def sample_grid_png(
    images: np.ndarray,
    true_labels: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    class_names: tuple[str, ...],
    path: Path,
    per_kind: int = 24,
    seed: int = 0,
) -> Path:
    """Random right (green) and wrong (red) predictions, with true label, prediction and confidence."""
    rng = np.random.default_rng(seed)
    right = np.nonzero(predicted == true_labels)[0]
    wrong = np.nonzero(predicted != true_labels)[0]
    chosen = list(rng.permutation(right)[:per_kind]) + list(rng.permutation(wrong)[:per_kind])
    columns = 8
    rows = max(1, -(-len(chosen) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.9))
    axes = np.atleast_2d(axes)
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, chosen):
        axis.imshow(images[index], cmap="gray", vmin=0, vmax=255)
        ok = predicted[index] == true_labels[index]
        axis.set_title(
            f"{class_names[true_labels[index]]}\n→ {class_names[predicted[index]]} {confidence[index]:.2f}",
            fontsize=7, color="green" if ok else "red",
        )
    figure.suptitle("sample predictions: true → predicted (green right, red wrong)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
