"""The benchmark's quality columns on the crowd clip and three lossless copies of it: mirrored,
played backwards, and both.

`annotate_throughput.py` measures recall, "same emotion" and tracks on one clip, where a single
face of 20-40 px is 1.4 % of its band at 1080p and one lost track moves a column by several
points. The copies are the same people in other situations for the tracker: mirrored, the
detector sees other pixels; played backwards, people walk away from the camera, so faces start
small and are found late (a tracker that only follows faces forwards keeps them while they
shrink, not while they grow). Summed over the four clips, a column says more about an option
than one clip does. No timings: the figures do not depend on how busy the machine is.

For each clip: the reference (facenet-pytorch `MTCNN.detect` on every frame, as in
annotate_throughput.py), the full path (the detector on every frame at every size) and each
configuration; per configuration the four clips' counts are summed.

    .venv/bin/python benchmarks/quality_copies.py [--size 1080p|640x360] [--set detect_every=10 --set detect_batch=4,small_faces_every=1]
"""

from __future__ import annotations

import argparse
import ast
import tempfile
from pathlib import Path

import fer_batch  # noqa: F401 - before torch, as in `fer`
import cv2
import numpy as np

from annotate_throughput import (
    DEFAULT_VIDEO, FULL_DETECTION, Result, agreement_counts, annotate, read_frames, recall_counts, reference,
)
from fer_batch.options import RunOptions
from fer_batch.pipeline import Annotator

COPIES = ("as shot", "mirrored", "backwards", "mirrored, backwards")


def write_copies(frames: list[np.ndarray], size: tuple[int, int] | None, folder: Path) -> dict[str, Path]:
    """The clip (resized to `size`, if given) and its three copies, each as a lossless FFV1 video."""
    if size is not None:
        frames = [cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) for rgb in frames]
    height, width = frames[0].shape[:2]
    paths = {}
    for name in COPIES:
        ordered = frames[::-1] if "backwards" in name else frames
        path = folder / f"{name.replace(', ', '-').replace(' ', '-')}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (width, height))
        if not writer.isOpened():
            raise SystemExit("this OpenCV has no lossless FFV1 writer")
        for rgb in ordered:
            writer.write(cv2.cvtColor(np.ascontiguousarray(rgb[:, ::-1] if "mirrored" in name else rgb), cv2.COLOR_RGB2BGR))
        writer.release()
        paths[name] = path
    return paths


def counts(found: Result, truth: Result, full: Result) -> np.ndarray:
    """[faces >= 40 px, of them found, faces 20-40 px, of them found, faces matched with the full
    path, of them with its emotion], counted as annotate_throughput.py counts them."""
    large_hits, large = recall_counts(found, truth, 40, float("inf"))
    small_hits, small = recall_counts(found, truth, 20, 40)
    same, matched = agreement_counts(found, full)
    return np.array([large, large_hits, small, small_hits, matched, same], np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--size", default="1080p", help="1080p (the clip as it is) or WxH, e.g. 640x360")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE,...",
                        help="a configuration to add, as RunOptions fields (e.g. detect_batch=4,small_faces_every=5)")
    args = parser.parse_args()
    size = None if args.size == "1080p" else tuple(int(part) for part in args.size.split("x"))
    configurations = {"defaults": {}, "--small-faces-every 10": {"small_faces_every": 10}}
    for text in args.set:
        configurations[text] = {name: ast.literal_eval(value) for name, value in (pair.split("=") for pair in text.split(","))}

    annotator = Annotator()
    totals = {name: np.zeros(6, np.int64) for name in configurations}
    tracks: dict[str, list[int]] = {name: [] for name in configurations}
    full_tracks = []
    with tempfile.TemporaryDirectory() as folder:
        copies = write_copies(read_frames(args.video, None), size, Path(folder))
        for copy, path in copies.items():
            truth = reference(path, None, annotator.device)
            full = annotate(annotator, path, RunOptions(**FULL_DETECTION))
            full_tracks.append(full.tracks)
            for name, changes in configurations.items():
                result = annotate(annotator, path, RunOptions(**changes))
                tally = counts(result, truth, full)
                totals[name] += tally
                tracks[name].append(result.tracks)
                print(f"  {copy:20s} {name:70s} >=40 px {tally[1]}/{tally[0]}  20-40 px {tally[3]}/{tally[2]}  "
                      f"same emotion {tally[5]}/{tally[4]}  tracks {result.tracks}/{full.tracks}", flush=True)
    print(f"\n{args.video.name} at {args.size}, summed over {', '.join(COPIES)}; the full path's tracks: {full_tracks}")
    print(f"{'configuration':70s} {'recall>=40px':>12s} {'recall 20-40':>12s} {'same emotion':>12s}  tracks")
    for name, tally in totals.items():
        print(f"{name:70s} {tally[1] / tally[0]:12.1%} {tally[3] / tally[2]:12.1%} {tally[5] / tally[4]:12.1%}  {tracks[name]}")


if __name__ == "__main__":
    main()
