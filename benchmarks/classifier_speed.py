"""Crops/s of checkpoints' encoders alone, with and without flip averaging (no detection).

    .venv/bin/python benchmarks/classifier_speed.py runs/shipped2-ensemble.pt fer_batch/weights/fer-cnn-gru.pt

Best of 3 repeats of 10 batches of 64 random crops, channels-last, on the CPU with
`--threads` threads (default 2): fp32 for every checkpoint, and int8 too for those that carry
int8 encoders (fer_batch.quantize). Each line ends with its ratio to the first line's faces/s
with flip averaging (the reference). Compare checkpoints only within one run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from fer_batch.model import load_checkpoint, model_macs_per_crop, read_checkpoint
from fer_batch.quantize import INT8_KEY


def crops_per_second(model: torch.nn.Module, crops: torch.Tensor, flip: bool, repeats: int = 3, batches: int = 10) -> float:
    with torch.no_grad():
        for _ in range(3):
            model.encode(crops, flip_average=flip)
        best = float("inf")
        for _ in range(repeats):
            begin = time.perf_counter()
            for _ in range(batches):
                model.encode(crops, flip_average=flip)
            best = min(best, time.perf_counter() - begin)
    return len(crops) * batches / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    crops = torch.randn(args.batch, 1, 48, 48).contiguous(memory_format=torch.channels_last)
    reference = None
    for path in args.checkpoints:
        precisions = ["fp32"] + (["int8"] if INT8_KEY in read_checkpoint(path) else [])
        for precision in precisions:
            model = load_checkpoint(path, precision=precision).model
            plain, flipped = (crops_per_second(model, crops, flip) for flip in (False, True))
            reference = reference or flipped
            print(f"{path} ({precision}): {model_macs_per_crop(model) / 1e6:.0f} M MACs per crop, {plain:.0f} crops/s, "
                  f"{flipped:.0f} faces/s with flip averaging ({flipped / reference:.2f}x the first)")


if __name__ == "__main__":
    main()
