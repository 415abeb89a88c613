"""Using fer-batch from Python: a DataFrame for small jobs, a stream for large ones.

    .venv/bin/python examples/pipeline_api.py ../shared/media
"""

from __future__ import annotations

import sys
from collections import Counter

import fer_batch
from fer_batch.api import build_options
from fer_batch.pipeline import Annotator


def main(folder: str) -> None:
    # Load the detector and the shipped CNN-GRU once; reuse them for every call.
    annotator = Annotator(build_options(device="auto", max_frames=25, detection_scale=0.75))

    # 1. Small job: one DataFrame, one row per face per annotated frame.
    faces = fer_batch.annotate([folder], annotator=annotator)
    print(faces[["source", "frame_index", "track_id", "emotion", "confidence"]].head(10).to_string(index=False))
    print("errors:", faces.attrs["errors"].to_dict("records"))

    # Per-track dominant emotion in each video, straight from the table.
    videos = faces[faces.media_type == "video"]
    print(videos.groupby(["source", "track_id"]).emotion.agg(lambda e: e.mode().iloc[0]).head())

    # 2. Large job: stream rows in constant memory (e.g. into a database or a running tally).
    tally: Counter[str] = Counter()
    for face in fer_batch.iter_annotations([folder], annotator=annotator):
        tally[face.emotion] += 1
    print("faces per emotion:", dict(tally))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/media")
