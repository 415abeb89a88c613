"""Copy a run's best checkpoint into weights/ as the shipped default.

The crop template (fer_batch.preprocess) is written into the checkpoint here, from
the calibrated values, so annotate frames faces the way the training data is framed;
the template plays no part in training itself (FER2013 images are already crops).

    python -m fer_batch.training.export runs/full/best.pt weights/fer-cnn-gru.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fer_batch.model import file_sha256, save_checkpoint
from fer_batch.preprocess import Preprocessing


def export_checkpoint(source: Path, target: Path) -> str:
    payload = torch.load(source, map_location="cpu", weights_only=False)
    shipped = Preprocessing.from_dict(payload["preprocessing"])
    payload["preprocessing"] = Preprocessing(
        crop_size=shipped.crop_size,
        landmarks=Preprocessing().landmarks,
        pixel_mean=shipped.pixel_mean,
        pixel_std=shipped.pixel_std,
        tta_flip=shipped.tta_flip,
    ).to_dict()
    payload["exported_from"] = str(source)
    save_checkpoint(payload, target)
    return file_sha256(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    digest = export_checkpoint(args.source, args.target)
    print(f"{args.target}: {args.target.stat().st_size / 1e6:.1f} MB, sha256 {digest}")


if __name__ == "__main__":
    main()
