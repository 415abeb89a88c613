"""Generate demo media from FER2013 PublicTest faces, for the example report in results/.

- collage.jpg: six faces of different emotions, upscaled, on a plain background;
- two_people.mp4: two faces drifting slowly for 4 s at 15 fps; the left one changes
  expression half way (a cross-fade to a face of another emotion), the right one holds.

    .venv/bin/python examples/make_demo_media.py --fer ../shared/fer2013 --out out/demo-media
    .venv/bin/fer annotate out/demo-media --out results/example-report/demo.parquet \\
        --report results/example-report/report.html
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

FACE_SIZE = 200
PAD = 60


def pick(fer: Path, emotion: str, index: int) -> np.ndarray:
    files = sorted((fer / "test" / emotion).glob("*.png"))
    face = cv2.imread(str(files[index]), cv2.IMREAD_GRAYSCALE)
    return cv2.resize(face, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_CUBIC)


def collage(fer: Path) -> np.ndarray:
    emotions = ["happy", "surprise", "neutral", "sad", "angry", "fear"]
    canvas = np.full((2 * FACE_SIZE + 3 * PAD, 3 * FACE_SIZE + 4 * PAD), 200, np.uint8)
    for position, emotion in enumerate(emotions):
        row, column = divmod(position, 3)
        y = PAD + row * (FACE_SIZE + PAD)
        x = PAD + column * (FACE_SIZE + PAD)
        canvas[y : y + FACE_SIZE, x : x + FACE_SIZE] = pick(fer, emotion, 3)
    return cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)


def video(fer: Path, path: Path, frames: int = 60, fps: float = 15.0) -> None:
    width, height = 2 * FACE_SIZE + 3 * PAD + 80, FACE_SIZE + 2 * PAD + 40
    before, after, steady = pick(fer, "neutral", 5), pick(fer, "happy", 5), pick(fer, "surprise", 2)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for index in range(frames):
        canvas = np.full((height, width), 190, np.uint8)
        progress = index / (frames - 1)
        blend = float(np.clip((index - frames / 2) / 4, 0, 1))  # a 4-frame cross-fade at mid-clip
        left = cv2.addWeighted(before, 1 - blend, after, blend, 0)
        drift = int(round(40 * progress))
        canvas[PAD + drift // 2 : PAD + drift // 2 + FACE_SIZE, PAD + drift : PAD + drift + FACE_SIZE] = left
        x = 2 * PAD + FACE_SIZE + 60 - drift
        canvas[PAD + 20 : PAD + 20 + FACE_SIZE, x : x + FACE_SIZE] = steady
        writer.write(cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR))
    writer.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fer", type=Path, default=Path("../shared/fer2013"))
    parser.add_argument("--out", type=Path, default=Path("out/demo-media"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out / "collage.jpg"), collage(args.fer), [cv2.IMWRITE_JPEG_QUALITY, 92])
    video(args.fer, args.out / "two_people.mp4")
    print(f"wrote {args.out / 'collage.jpg'} and {args.out / 'two_people.mp4'}")


if __name__ == "__main__":
    main()
