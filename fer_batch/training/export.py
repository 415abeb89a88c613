"""Copy trained run checkpoints into weights/ as the shipped default.

One source is copied as a single CNN-GRU; several sources (runs trained from different
seeds) are combined into one ensemble checkpoint whose probabilities are the members'
mean. The crop template (fer_batch.preprocess) is written into the checkpoint here,
from the calibrated values, so annotate frames faces the way the training data is
framed; the template plays no part in training itself (FER2013 images are already
crops). Optimiser and schedule state are dropped: a shipped file is for inference.

    python -m fer_batch.training.export runs/full/best.pt weights/fer-cnn-gru.pt
    python -m fer_batch.training.export runs/a/best.pt runs/b/best.pt weights/fer-cnn-gru.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from fer_batch.model import ENSEMBLE_KEY, ensemble_payload, file_sha256, save_checkpoint
from fer_batch.preprocess import Preprocessing

# Run-checkpoint entries that describe the network rather than the state of its training.
_INFERENCE_KEYS = ("format", "model_config", "class_names", "preprocessing", "model_state", "epoch", "metrics")


def _shipped_preprocessing(saved: dict[str, Any]) -> dict[str, Any]:
    trained = Preprocessing.from_dict(saved)
    return Preprocessing(
        crop_size=trained.crop_size,
        landmarks=Preprocessing().landmarks,
        pixel_mean=trained.pixel_mean,
        pixel_std=trained.pixel_std,
        tta_flip=trained.tta_flip,
    ).to_dict()


def _load_member(source: Path) -> dict[str, Any]:
    payload = torch.load(source, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or "model_state" not in payload:
        raise ValueError(f"{source}: not a fer-batch run checkpoint")
    if ENSEMBLE_KEY in payload:
        raise ValueError(f"{source}: already an ensemble; export its members' run checkpoints instead")
    member = {key: payload[key] for key in _INFERENCE_KEYS if key in payload}
    member["preprocessing"] = _shipped_preprocessing(payload["preprocessing"])
    member["training_config"] = payload.get("training_config")
    return member


def export_checkpoint(sources: list[Path] | Path, target: Path) -> str:
    """Write the shipped checkpoint from one or more run checkpoints; returns its sha256."""
    sources = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(source) for source in sources]
    members = [_load_member(source) for source in sources]
    if len(members) == 1:
        payload = {**members[0], "exported_from": str(sources[0])}
    else:
        payload = ensemble_payload(
            members,
            exported_from=[str(source) for source in sources],
            member_metrics=[member.get("metrics") for member in members],
            member_training_configs=[member.get("training_config") for member in members],
        )
    save_checkpoint(payload, target)
    return file_sha256(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", type=Path, nargs="+", help="run checkpoints (best.pt); several make an ensemble")
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    digest = export_checkpoint(args.sources, args.target)
    print(f"{args.target}: {args.target.stat().st_size / 1e6:.1f} MB, sha256 {digest}")


if __name__ == "__main__":
    main()
