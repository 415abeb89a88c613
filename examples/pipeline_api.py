"""Using fer-batch from Python: a DataFrame for small jobs, a stream for large ones.

    .venv/bin/python examples/pipeline_api.py ../shared/media
"""

from __future__ import annotations

import sys
from collections import Counter

import fer_batch


def main(folder: str) -> None:
    # Load the detector and the shipped CNN-GRU once; reuse them for every call, with any run options.
    annotator = fer_batch.Annotator(device="auto")

    # 1. Small job: one DataFrame, one row per face per annotated frame.
    faces = fer_batch.annotate([folder], annotator=annotator, max_frames=25, detect_scale=0.75)
    print(faces[["source", "frame_index", "track_id", "emotion", "confidence"]].head(10).to_string(index=False))
    print("errors:", faces.attrs["errors"].to_dict("records"))

    # Per-track dominant emotion in each video, straight from the table.
    videos = faces[faces.media_type == "video"]
    print(videos.groupby(["source", "track_id"]).emotion.agg(lambda e: e.mode().iloc[0]).head())

    # 2. Large job: stream columnar batches in constant memory (e.g. into a database or a running tally).
    tally: Counter[str] = Counter()
    for batch in fer_batch.iter_faces([folder], annotator=annotator, max_frames=25):
        best = batch.probabilities.argmax(axis=1)
        tally.update(annotator.class_names[index] for index in best)
    print("faces per emotion:", dict(tally))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/media")
