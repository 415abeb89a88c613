"""The model card's before/after picture: one crowd track's labels frame by frame.

Reads two annotate outputs of the same video (e.g. `--temporal none` and the default) and
draws, for the longest track, each frame's label as a coloured bar, with its probability as
the bar's height, one row per output.

    python examples/temporal_timeline.py BEFORE.parquet AFTER.parquet --out timeline.png \
        [--labels "CNN-GRU, unfiltered" "bidirectional"]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from fer_batch.labels import EMOTIONS, emotion_color  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--labels", nargs=2, default=["before", "after"])
    arguments = parser.parse_args()
    runs = [pd.read_parquet(path) for path in (arguments.before, arguments.after)]
    videos = runs[1][runs[1].media_type == "video"]
    source, track = videos.groupby(["source", "track_id"]).size().idxmax()
    figure, axes = plt.subplots(2, 1, figsize=(10, 3.6), sharex=True)
    for axis, faces, label in zip(axes, runs, arguments.labels):
        rows = faces[(faces.source == source) & (faces.track_id == track)].sort_values("frame_index")
        changes = int((rows.emotion.to_numpy()[1:] != rows.emotion.to_numpy()[:-1]).sum())
        axis.bar(rows.frame_index, rows.confidence, width=1.0, color=[emotion_color(name) for name in rows.emotion])
        axis.set_ylim(0, 1)
        axis.set_ylabel("p(label)")
        axis.set_title(f"{label}: {changes} label changes in {len(rows)} frames", fontsize=10, loc="left")
    axes[-1].set_xlabel(f"frame of {source}, track {track}")
    handles = [plt.Rectangle((0, 0), 1, 1, color=emotion_color(name)) for name in EMOTIONS]
    figure.legend(handles, EMOTIONS, loc="upper right", ncol=7, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    figure.savefig(arguments.out, dpi=110)
    print(f"wrote {arguments.out} (track {track} of {source})")


if __name__ == "__main__":
    main()
