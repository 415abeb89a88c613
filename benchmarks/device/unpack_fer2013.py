"""Rebuild the FER2013 image folders on a device machine from the packed arrays.

The device tool carries at most 64 MiB of working tree, so `pack` stores the train and
PublicTest splits as raw 48x48 uint8 arrays (xz with a vertical delta filter, ~50 MB)
in the ignored folder .devdata/, and `unpack` writes the same <split>/<emotion>/*.png
layout as ../shared/fer2013 (image order within each emotion is kept).

    python benchmarks/device/unpack_fer2013.py pack ../shared/fer2013 .devdata
    python benchmarks/device/unpack_fer2013.py unpack .devdata /tmp/fer2013
"""

from __future__ import annotations

import argparse
import lzma
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from fer_batch.labels import EMOTIONS
from fer_batch.training.data import load_split

SPLITS = {"train": "Training", "test": "PublicTest"}
FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 48}, {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def pack(data: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        dataset = load_split(data, split)
        np.save(folder / f"{split}-labels.npy", dataset.labels)
        (folder / f"{split}.u8.xz").write_bytes(
            lzma.compress(np.ascontiguousarray(dataset.images).tobytes(), format=lzma.FORMAT_XZ, filters=FILTERS)
        )


def unpack(folder: Path, data: Path) -> None:
    for split, prefix in SPLITS.items():
        labels = np.load(folder / f"{split}-labels.npy")
        images = np.frombuffer(lzma.decompress((folder / f"{split}.u8.xz").read_bytes()), np.uint8)
        images = images.reshape(len(labels), 48, 48)
        for emotion in EMOTIONS:
            (data / split / emotion).mkdir(parents=True, exist_ok=True)

        def write(index: int) -> None:
            path = data / split / EMOTIONS[labels[index]] / f"{prefix}_{index:05d}.png"
            cv2.imwrite(str(path), images[index])

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(write, range(len(labels))))
        print(f"{split}: {len(labels)} images -> {data / split}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("pack", "unpack"))
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    (pack if args.action == "pack" else unpack)(args.source, args.target)


if __name__ == "__main__":
    main()
