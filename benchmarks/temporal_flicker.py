"""Label changes inside tracks on real video, per temporal mode (no labels needed).

Annotates a video (default: the shared 1080p crowd clip, every frame) once per mode of
`--temporal` and prints, for tracks of at least `--min-length` frames, label changes per 100
frames, the ratio to `none` (the CNN alone), and how often each mode agrees with `none`.

    .venv/bin/python benchmarks/temporal_flicker.py [--video PATH] [--min-length 30] [--max-frames N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

DEFAULT_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "walking-crowd-1080p.mp4"


def label_changes_per_100(faces: pd.DataFrame, min_length: int) -> tuple[float, int]:
    changes = frames = 0
    for _, track in faces.sort_values(["track_id", "frame_index"]).groupby("track_id"):
        if len(track) >= min_length:
            labels = track.emotion.to_numpy()
            changes += int((labels[1:] != labels[:-1]).sum())
            frames += len(track)
    return (100.0 * changes / frames if frames else float("nan")), frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--min-length", type=int, default=30)
    parser.add_argument("--max-frames", type=int, default=None)
    arguments = parser.parse_args()

    import fer_batch
    from fer_batch.pipeline import Annotator

    annotator = Annotator(device="cpu")
    results = {}
    for mode in ("none", "causal", "bidirectional"):
        faces = fer_batch.annotate([arguments.video], annotator=annotator, temporal=mode, max_frames=arguments.max_frames)
        faces.attrs = {}  # the companion tables ride in attrs; merging below would compare them
        results[mode] = faces
    baseline, frames = label_changes_per_100(results["none"], arguments.min_length)
    print(f"{arguments.video.name}: {frames} faces in tracks of {arguments.min_length}+ frames")
    print("| temporal | label changes per 100 frames | x none | same label as none |\n|---|---|---|---|")
    for mode, faces in results.items():
        rate, _ = label_changes_per_100(faces, arguments.min_length)
        key = ["frame_index", "track_id"]
        merged = faces.merge(results["none"], on=key, suffixes=("", "_none"))
        print(f"| {mode} | {rate:.2f} | {rate / baseline:.2f} | {(merged.emotion == merged.emotion_none).mean():.1%} |")


if __name__ == "__main__":
    main()
