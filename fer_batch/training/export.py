"""Copy trained run checkpoints into fer_batch/weights/ as the shipped default.

One source is copied as a single CNN-GRU; several sources (runs trained from different
seeds) are combined into one ensemble checkpoint whose probabilities are the members'
mean. A source that is itself an exported ensemble contributes each of its members, so
a new run can join the shipped ones. The crop template (fer_batch.preprocess) is
written into the checkpoint here, from the calibrated values, so annotate frames faces
the way the training data is framed; the template plays no part in training itself
(FER2013 images are already crops). Optimiser and schedule state are dropped: a
shipped file is for inference.

    python -m fer_batch.training.export runs/full/best.pt fer_batch/weights/fer-cnn-gru.pt
    python -m fer_batch.training.export runs/a/best.pt runs/b/best.pt fer_batch/weights/fer-cnn-gru.pt
    python -m fer_batch.training.export fer_batch/weights/fer-cnn-gru.pt runs/c/best.pt new.pt [--half]
    python -m fer_batch.training.export runs/kd/best.pt fer_batch/weights/fer-cnn-gru.pt --half --tta-flip
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from fer_batch.model import checkpoint_members, ensemble_payload, file_sha256, read_checkpoint, save_checkpoint
from fer_batch.preprocess import Preprocessing

# Run-checkpoint entries that describe the network rather than the state of its training.
_INFERENCE_KEYS = ("format", "model_config", "class_names", "preprocessing", "model_state", "epoch", "metrics")


def _shipped_preprocessing(saved: dict[str, Any], tta_flip: bool | None = None) -> dict[str, Any]:
    trained = Preprocessing.from_dict(saved)
    return Preprocessing(
        crop_size=trained.crop_size,
        landmarks=Preprocessing().landmarks,
        pixel_mean=trained.pixel_mean,
        pixel_std=trained.pixel_std,
        tta_flip=trained.tta_flip if tta_flip is None else tta_flip,
    ).to_dict()


def _load_members(source: Path, tta_flip: bool | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(origin, member payload) for a run checkpoint, or for each member of an exported ensemble
    (which join individually, with the lineage recorded at their export)."""
    members = []
    for member in checkpoint_members(read_checkpoint(source), str(source)):
        kept = {key: member[key] for key in _INFERENCE_KEYS if key in member}
        kept["preprocessing"] = _shipped_preprocessing(member["preprocessing"], tta_flip)
        kept["training_config"] = member.get("training_config")
        members.append((str(member.get("exported_from") or source), kept))
    return members


def _half_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp32 tensors stored as fp16 (half the file); integer buffers untouched. Loading upcasts them."""
    return {key: value.half() if value.dtype == torch.float32 else value for key, value in state.items()}


def export_checkpoint(
    sources: list[Path] | Path, target: Path, half: bool = False, tta_flip: bool | None = None
) -> str:
    """Write the shipped checkpoint from run checkpoints and/or exported ensembles; returns its sha256.

    With `half`, weights are stored in fp16 to keep a several-member ensemble small; the
    network still runs in fp32 (load_state_dict upcasts), so only rounding of the weights differs.
    `tta_flip` sets the flip averaging of the shipped file (None: as the run was evaluated).
    """
    sources = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(source) for source in sources]
    loaded = [entry for source in sources for entry in _load_members(source, tta_flip)]
    origins = [origin for origin, _ in loaded]
    members = [member for _, member in loaded]
    if half:
        members = [{**member, "model_state": _half_state(member["model_state"])} for member in members]
    if len(members) == 1:
        payload = {**members[0], "exported_from": origins[0]}
    else:
        payload = ensemble_payload(
            members,
            exported_from=origins,
            member_metrics=[member.get("metrics") for member in members],
            member_training_configs=[member.get("training_config") for member in members],
        )
    save_checkpoint(payload, target)
    return file_sha256(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", type=Path, nargs="+", help="run checkpoints (best.pt) or exported ensembles; several make an ensemble")
    parser.add_argument("target", type=Path)
    parser.add_argument("--half", action="store_true", help="store weights as fp16 (half the size; run in fp32)")
    flip = parser.add_mutually_exclusive_group()
    flip.add_argument("--tta-flip", dest="tta_flip", action="store_true", default=None,
                      help="ship with flip averaging on (default: as the run was evaluated)")
    flip.add_argument("--no-tta-flip", dest="tta_flip", action="store_false", help="ship with flip averaging off")
    args = parser.parse_args()
    digest = export_checkpoint(args.sources, args.target, half=args.half, tta_flip=args.tta_flip)
    print(f"{args.target}: {args.target.stat().st_size / 1e6:.1f} MB, sha256 {digest}")


if __name__ == "__main__":
    main()
