"""Face tracking across the frames of one video.

A greedy IoU tracker with a constant-velocity box prediction: detections are matched
to the predicted boxes of live tracks, best overlap first; unmatched detections start
new tracks; a track survives `max_missed` detection rounds without a match, so a
face hidden for a moment keeps its id. Between detection rounds (detect-every-k),
tracks are carried forward on their predicted boxes. One tracker per video.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fer_batch import defaults
from fer_batch.detection import Detection


@dataclass(frozen=True)
class TrackerConfig:
    iou_threshold: float = defaults.TRACK_IOU_THRESHOLD
    max_missed: int = defaults.TRACK_MAX_MISSED


@dataclass(frozen=True)
class TrackedFace:
    """A face on one frame with its track id; `detected` is False for a carried-forward box."""

    track_id: int
    detection: Detection
    detected: bool


@dataclass
class _Track:
    track_id: int
    box: np.ndarray  # x1, y1, x2, y2 at the last update
    velocity: np.ndarray  # per-frame box change
    landmarks: np.ndarray
    score: float
    last_frame: int
    missed: int = 0
    history: list[int] = field(default_factory=list)

    def predicted_box(self, frame_index: int) -> np.ndarray:
        return self.box + self.velocity * (frame_index - self.last_frame)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) boxes."""
    if len(boxes_a) == 0 or len(boxes_b) == 0:
        return np.zeros((len(boxes_a), len(boxes_b)))
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(boxes_b[:, 2:] - boxes_b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-9), 0.0)


class IoUTracker:
    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        self.config = config
        self._tracks: list[_Track] = []
        self._next_id = 1

    def update(self, frame_index: int, detections: list[Detection]) -> list[TrackedFace]:
        """Match one detection round; returns every detection with its (possibly new) track id."""
        live = list(self._tracks)
        predicted = np.array([track.predicted_box(frame_index) for track in live]).reshape(-1, 4)
        boxes = np.array([detection.box for detection in detections], dtype=np.float64).reshape(-1, 4)
        overlaps = box_iou(predicted, boxes)
        matched_tracks: set[int] = set()
        assignment: dict[int, _Track] = {}
        for flat in np.argsort(-overlaps, axis=None):
            track_index, detection_index = np.unravel_index(flat, overlaps.shape)
            if overlaps[track_index, detection_index] < self.config.iou_threshold:
                break
            if track_index in matched_tracks or detection_index in assignment:
                continue
            matched_tracks.add(int(track_index))
            assignment[int(detection_index)] = live[track_index]
        results = []
        for detection_index, detection in enumerate(detections):
            box = boxes[detection_index]
            track = assignment.get(detection_index)
            if track is None:
                track = _Track(self._next_id, box, np.zeros(4), detection.landmarks, detection.score, frame_index)
                self._next_id += 1
                self._tracks.append(track)
            else:
                elapsed = max(1, frame_index - track.last_frame)
                new_velocity = (box - track.box) / elapsed
                track.velocity = 0.5 * track.velocity + 0.5 * new_velocity
                track.box, track.landmarks, track.score = box, detection.landmarks, detection.score
                track.last_frame, track.missed = frame_index, 0
            results.append(TrackedFace(track.track_id, detection, True))
        for index, track in enumerate(live):
            if index not in matched_tracks and track.last_frame != frame_index:
                track.missed += 1
        self._tracks = [track for track in self._tracks if track.missed <= self.config.max_missed]
        return results

    def carry_forward(self, frame_index: int) -> list[TrackedFace]:
        """Faces on a frame the detector skipped: live, recently seen tracks at their predicted boxes."""
        faces = []
        for track in self._tracks:
            if track.missed > 0:
                continue
            box = track.predicted_box(frame_index)
            shift = (box[:2] + box[2:]) / 2 - (track.box[:2] + track.box[2:]) / 2
            scale = (box[2] - box[0]) / max(1e-6, track.box[2] - track.box[0])
            centre = (track.box[:2] + track.box[2:]) / 2
            landmarks = (track.landmarks - centre) * scale + centre + shift
            detection = Detection(tuple(float(v) for v in box), track.score, landmarks.astype(np.float32))
            faces.append(TrackedFace(track.track_id, detection, False))
        return faces
