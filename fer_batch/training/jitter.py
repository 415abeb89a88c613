"""How much the alignment of a tracked face jitters from frame to frame, measured on real video.

The synthetic training clips (`clips.py`) shake their faces from frame to frame; this
measures the shake real tracks show, so the clips can use it. For two consecutive frames
of a track, each frame's alignment maps the frame to the 48x48 crop; the second alignment
after the inverse of the first maps crop to crop. For a rigid face and perfect landmarks
it is the identity: what it moves is MTCNN's landmark noise (plus a little real head
motion, so these are upper bounds). Reported as per-frame standard deviations (robust: 1.4826
x the median absolute deviation, divided by sqrt 2 for one frame of a pair) of the crop
centre's shift (as a fraction of the crop), of the log scale and of the angle; and the share
of frames inside those tracks where the detector found no face (the track has a gap).

    fer annotate ../shared/media --out crowd.parquet --detect-every 1    # the detector on every frame
    python -m fer_batch.training.jitter crowd.parquet
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from fer_batch.preprocess import Preprocessing, similarity_to_template
from fer_batch.schema import landmark_columns


def _robust_std(values: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def alignment_jitter(faces: pd.DataFrame, preprocessing: Preprocessing = Preprocessing(), min_length: int = 10) -> dict:
    """Per-frame jitter of the alignment in tracks of `min_length`+ consecutive video frames."""
    template = np.asarray(preprocessing.landmarks)
    centre = np.array([preprocessing.crop_size / 2, preprocessing.crop_size / 2, 1.0])
    shifts, log_scales, angles, tracks, spanned, found, runs = [], [], [], 0, 0, 0, []
    videos = faces[faces.media_type == "video"].sort_values(["source", "track_id", "frame_index"])
    for _, track in videos.groupby(["source", "track_id"]):
        if len(track) < min_length:
            continue
        tracks += 1
        frames = track.frame_index.to_numpy()
        spanned, found = spanned + int(frames[-1] - frames[0] + 1), found + len(frames)
        steps = np.diff(frames)
        runs.extend((steps[steps > 1] - 1).tolist())
        points = track[landmark_columns()].to_numpy(np.float64).reshape(-1, 5, 2)
        matrices = []
        for landmarks in points:
            matrix = np.eye(3)
            matrix[:2] = similarity_to_template(landmarks, template)
            matrices.append(matrix)
        for previous in range(len(track) - 1):
            if frames[previous + 1] != frames[previous] + 1:
                continue
            relative = matrices[previous + 1] @ np.linalg.inv(matrices[previous])
            moved = relative @ centre
            shifts.append((moved[:2] - centre[:2]) / preprocessing.crop_size)
            log_scales.append(math.log(math.hypot(relative[0, 0], relative[1, 0])))
            angles.append(math.degrees(math.atan2(relative[1, 0], relative[0, 0])))
    if not shifts:
        raise ValueError("no track has enough consecutive frames to measure")
    shift = np.asarray(shifts)
    pair = math.sqrt(2.0)
    return {
        "tracks": tracks,
        "frame_pairs": len(shifts),
        "shift_std": (_robust_std(shift[:, 0]) + _robust_std(shift[:, 1])) / 2 / pair,
        "log_scale_std": _robust_std(np.asarray(log_scales)) / pair,
        "angle_std_deg": _robust_std(np.asarray(angles)) / pair,
        "missed_frame_share": 1.0 - found / spanned,  # frames inside tracks with no face found
        "max_missed_run": max(runs, default=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("faces", type=Path, help="a face table of `fer annotate` on video, every frame")
    parser.add_argument("--min-length", type=int, default=10)
    args = parser.parse_args()
    from fer_batch.results import read_run

    print(json.dumps(alignment_jitter(read_run(args.faces).faces, min_length=args.min_length), indent=2))


if __name__ == "__main__":
    main()
