"""Face tracking across the frames of one video.

A greedy IoU tracker with a constant-velocity box prediction: detections are matched
to the predicted boxes of live tracks, best overlap first; unmatched detections start
new tracks; a track survives `max_missed` detection rounds without a match, so a
face hidden for a moment keeps its id. Between detection rounds (detect-every-k),
tracks are carried forward on their predicted boxes. One tracker per video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fer_batch import defaults
from fer_batch.faces import Faces


@dataclass
class _Track:
    track_id: int
    box: np.ndarray  # x1, y1, x2, y2 at the last update (float64)
    velocity: np.ndarray  # per-frame box change
    landmarks: np.ndarray  # (5, 2) float32
    score: float
    last_frame: int
    missed: int = 0

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
    def __init__(self, track_iou: float = defaults.TRACK_IOU, max_missed: int = defaults.MAX_MISSED) -> None:
        self.track_iou = track_iou
        self.max_missed = max_missed
        self._tracks: list[_Track] = []
        self._next_id = 1

    def update(self, frame_index: int, frame: Faces) -> Faces:
        """Match the detections of one frame; returns them with track ids, ordered by track id."""
        live = list(self._tracks)
        boxes = frame.boxes.astype(np.float64)
        predicted = np.array([track.predicted_box(frame_index) for track in live]).reshape(-1, 4)
        overlaps = box_iou(predicted, boxes)
        matched_tracks: set[int] = set()
        assignment: dict[int, _Track] = {}
        for flat in np.argsort(-overlaps, axis=None):
            track_index, detection_index = np.unravel_index(flat, overlaps.shape)
            if overlaps[track_index, detection_index] < self.track_iou:
                break
            if track_index in matched_tracks or detection_index in assignment:
                continue
            matched_tracks.add(int(track_index))
            assignment[int(detection_index)] = live[track_index]
        track_ids = np.empty(len(frame), np.int32)
        for detection_index in range(len(frame)):
            box = boxes[detection_index]
            landmarks, score = frame.landmarks[detection_index], float(frame.det_score[detection_index])
            track = assignment.get(detection_index)
            if track is None:
                track = _Track(self._next_id, box, np.zeros(4), landmarks, score, frame_index)
                self._next_id += 1
                self._tracks.append(track)
            else:
                elapsed = max(1, frame_index - track.last_frame)
                track.velocity = 0.5 * track.velocity + 0.5 * (box - track.box) / elapsed
                track.box, track.landmarks, track.score = box, landmarks, score
                track.last_frame, track.missed = frame_index, 0
            track_ids[detection_index] = track.track_id
        for index, track in enumerate(live):
            if index not in matched_tracks and track.last_frame != frame_index:
                track.missed += 1
        self._tracks = [track for track in self._tracks if track.missed <= self.max_missed]
        order = np.argsort(track_ids, kind="stable")
        return frame.select(order).replace(track_id=track_ids[order])

    def carry_forward(self, like: Faces, frame_index: int, timestamp_s: float, frame_size: tuple[int, int]) -> Faces:
        """Faces on a frame the detector skipped: live, recently seen tracks at their predicted boxes,
        ordered by track id (`like` gives the source; frame_size is (width, height))."""
        carried = [track for track in self._tracks if track.missed == 0]
        carried.sort(key=lambda track: track.track_id)
        count = len(carried)
        boxes = np.empty((count, 4), np.float64)
        landmarks = np.empty((count, 5, 2), np.float32)
        for row, track in enumerate(carried):
            box = track.predicted_box(frame_index)
            centre = (track.box[:2] + track.box[2:]) / 2
            shift = (box[:2] + box[2:]) / 2 - centre
            scale = (box[2] - box[0]) / max(1e-6, track.box[2] - track.box[0])
            boxes[row] = box
            landmarks[row] = (track.landmarks - centre) * scale + centre + shift
        return Faces.empty(like.source, like.media_type).replace(
            frame_index=np.full(count, frame_index, np.int64),
            timestamp_s=np.full(count, timestamp_s, np.float64),
            boxes=boxes.astype(np.float32),
            landmarks=landmarks,
            det_score=np.array([track.score for track in carried], np.float32),
            detected=np.zeros(count, bool),
            frame_width=np.full(count, frame_size[0], np.int32),
            frame_height=np.full(count, frame_size[1], np.int32),
            track_id=np.array([track.track_id for track in carried], np.int32),
        )
