"""Score candidate ensemble members, alone and in every combination, on PublicTest.

Choosing which trained networks to ship together is model selection, so it is done on
PublicTest (`test/`), never on PrivateTest. Each member's probabilities are computed
once (with the checkpoint's flip averaging); a combination's answer is the mean of its
members' probabilities, exactly as `EmotionEnsemble` computes it.

    python -m fer_batch.training.select_members --data ../shared/fer2013 \\
        fer_batch/weights/fer-cnn-gru.pt runs/wide/best.pt
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fer_batch.model import EmotionEnsemble, load_checkpoint
from fer_batch.training.data import load_split
from fer_batch.training.metrics import classification_report
from fer_batch.training.train import predict_stills


@dataclass(frozen=True)
class CombinationScore:
    members: tuple[str, ...]
    accuracy: float
    macro_f1: float


def member_probabilities(sources: list[Path], data: str, split: str = "test") -> dict[str, np.ndarray]:
    """PublicTest probabilities per member; an exported ensemble contributes each of its members."""
    faces = load_split(data, split)
    device = torch.device("cpu")
    probabilities: dict[str, np.ndarray] = {}
    for source in sources:
        checkpoint = load_checkpoint(source)
        networks = checkpoint.model.members if isinstance(checkpoint.model, EmotionEnsemble) else [checkpoint.model]
        for index, network in enumerate(networks):
            name = f"{source}#{index}" if len(networks) > 1 else str(source)
            probabilities[name] = predict_stills(network, faces, checkpoint.preprocessing, device)
    return probabilities


def score_combinations(probabilities: dict[str, np.ndarray], labels: np.ndarray) -> list[CombinationScore]:
    """Every non-empty combination of members, best accuracy first."""
    names = list(probabilities)
    scores = []
    for size in range(1, len(names) + 1):
        for combination in itertools.combinations(names, size):
            mean = np.mean([probabilities[name] for name in combination], axis=0)
            report = classification_report(labels, mean.argmax(1), tuple(str(i) for i in range(mean.shape[1])))
            scores.append(CombinationScore(combination, report.accuracy, report.macro_f1))
    return sorted(scores, key=lambda score: (-score.accuracy, len(score.members)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", type=Path, nargs="+", help="run checkpoints or exported ensembles")
    parser.add_argument("--data", required=True, help="FER2013 CSV or image-folder root")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    probabilities = member_probabilities(args.sources, args.data, args.split)
    labels = load_split(args.data, args.split).labels
    for score in score_combinations(probabilities, labels):
        print(f"{score.accuracy:.4f}  macro-F1 {score.macro_f1:.4f}  {' + '.join(score.members)}")


if __name__ == "__main__":
    main()
