"""Add int8 encoders to a checkpoint: calibrate activation ranges on FER2013 training crops.

The checkpoint keeps its float weights; the int8 encoder state of each network is added
under `fer_batch.quantize.INT8_KEY`, with how it was calibrated. `fer annotate` and
`fer evaluate` then run int8 on a CPU by default (`--precision auto`); `--precision fp32`
runs the float network. Calibration sees training crops only, each with its mirror
image, because flip averaging feeds the encoder both; PublicTest is never seen.

    python -m fer_batch.training.quantize fer_batch/weights/fer-cnn-gru.pt --data ../shared/fer2013
    fer evaluate --data ../shared/fer2013 --split test --precision int8   # then compare with fp32
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fer_batch.model import file_sha256, load_checkpoint, read_checkpoint, save_checkpoint
from fer_batch.preprocess import normalize_crops
from fer_batch.quantize import INT8_KEY, calibrate_int8
from fer_batch.training.data import load_split

CALIBRATION_KEY = "int8_calibration"  # how the int8 ranges were found (data, split, count, seed)


def add_int8_encoders(
    checkpoint: Path, data: Path, out: Path | None = None, count: int = 2048, seed: int = 0, batch: int = 128
) -> str:
    """Calibrate on `count` random training crops (and their mirrors) and write the checkpoint
    with its int8 encoders to `out` (default: in place); returns the file's sha256."""
    loaded = load_checkpoint(checkpoint, precision="fp32")
    dataset = load_split(data, "train", size=loaded.preprocessing.crop_size, class_names=loaded.class_names)
    chosen = np.sort(np.random.default_rng(seed).choice(len(dataset), size=min(count, len(dataset)), replace=False))
    crops = dataset.images[chosen]
    batches = []
    for start in range(0, len(crops), batch):
        normalized = normalize_crops(crops[start : start + batch], loaded.preprocessing)
        batches += [normalized, normalized.flip(-1)]
    payload = read_checkpoint(checkpoint)
    payload[INT8_KEY] = calibrate_int8(loaded.model, batches)
    payload[CALIBRATION_KEY] = {"data": str(data), "split": "train", "count": len(crops), "seed": seed, "mirrored": True,
                                "torch": torch.__version__}
    target = out or checkpoint
    save_checkpoint(payload, target)
    return file_sha256(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="FER2013 (CSV or folder root); its train split calibrates")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of in place")
    parser.add_argument("--count", type=int, default=2048, help="training crops to calibrate on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    digest = add_int8_encoders(args.checkpoint, args.data, args.out, args.count, args.seed)
    target = args.out or args.checkpoint
    print(f"{target}: {target.stat().st_size / 1e6:.1f} MB with int8 encoders, sha256 {digest}")


if __name__ == "__main__":
    main()
