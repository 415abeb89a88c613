"""Face tracking across the frames of one video.

A greedy IoU tracker with a constant-velocity box prediction (the box moves, its size
stays): detections are matched to the predicted boxes of live tracks, best overlap first;
unmatched detections start new tracks; a track survives `max_missed` rounds without a
match, so a face hidden for a moment keeps its id. Between detector keyframes
(detect-every-k), each live track's predicted box is refined by MTCNN's last stage and the
track moves on with the refined box (`predictions` and `update_tracks`); on a keyframe, the
tracks the detector missed are refined the same way (`predictions(only_missing=True)` and
`recover`). Each track keeps the size of its last detection, which refined boxes are held to
(`detected_sizes`; the pipeline drops those grown past `defaults.MAX_REFINED_GROWTH`): a refined
box, however high O-Net scores it, does not set it, since O-Net's box drifts by a few per cent a
frame onto hair or a passer-by at 0.9-1.0. One tracker per video.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    detected_size: float  # `box_sizes` of its last detection (a keyframe's face matched by `update`)
    missed: int = 0

    def predicted_box(self, frame_index: int) -> np.ndarray:
        """The last box moved on by the track's velocity; its size is kept, since a face's size
        changes slowly and refined boxes' sizes are noisy (extrapolated, a few frames of that
        noise grow a box past what O-Net recognises)."""
        shift = (self.velocity[:2] + self.velocity[2:]) / 2 * (frame_index - self.last_frame)
        return self.box + np.tile(shift, 2)

    def move(self, frame_index: int, box: np.ndarray, landmarks: np.ndarray, score: float, detected: bool) -> None:
        """The track's face on `frame_index`: its velocity follows, its misses are cleared; a
        `detected` face sets its size."""
        elapsed = max(1, frame_index - self.last_frame)
        self.velocity = 0.5 * self.velocity + 0.5 * (box - self.box) / elapsed
        self.box, self.landmarks, self.score = box, landmarks, score
        self.last_frame, self.missed = frame_index, 0
        if detected:
            self.detected_size = float(box_sizes(box[None])[0])


def box_sizes(boxes: np.ndarray) -> np.ndarray:
    """(N,) the square root of each (N, 4) box's area: one length for a box's size."""
    sides = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).astype(np.float64)
    return np.sqrt(sides[:, 0] * sides[:, 1])


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


def greedy_pairs(scores: np.ndarray, minimum: float, rows_taken: Iterable[int] = (),
                 columns_taken: Iterable[int] = ()) -> list[tuple[int, int]]:
    """(row, column) pairs of a score matrix, best score first, each row and column at most once
    (and none already taken), down to `minimum`: the tracker's matching and the claims."""
    rows, columns, pairs = set(rows_taken), set(columns_taken), []
    for flat in np.argsort(-scores, axis=None):
        row, column = (int(index) for index in np.unravel_index(flat, scores.shape))
        if scores[row, column] < minimum:
            break
        if row in rows or column in columns:
            continue
        rows.add(row)
        columns.add(column)
        pairs.append((row, column))
    return pairs


class IoUTracker:
    def __init__(self, track_iou: float = defaults.TRACK_IOU, max_missed: int = defaults.MAX_MISSED) -> None:
        self.track_iou = track_iou
        self.max_missed = max_missed
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._frame: int | None = None  # the frame of the current round, and of the round before it
        self._previous_frame: int | None = None

    def _round(self, frame_index: int) -> None:
        """Note the frame a round is on (a keyframe has two: `update`, then `recover`)."""
        if frame_index != self._frame:
            self._previous_frame, self._frame = self._frame, frame_index

    def round_before(self, frame_index: int) -> int | None:
        """The frame of the round before the one on `frame_index`, whether that round has begun
        or not: every annotated frame of a video is a round, so this is the annotated frame before
        `frame_index` (None on the video's first)."""
        return self._previous_frame if frame_index == self._frame else self._frame

    def unbroken(self, track_ids: np.ndarray, frame_index: int) -> np.ndarray:
        """(M,) whether each named live track had its face on the annotated frame before
        `frame_index`: followed without a break, not back from a gap."""
        return self.last_frames(track_ids) == self.round_before(frame_index)

    def _assign(self, frame_index: int, boxes: np.ndarray, claimed: dict[int, int]) -> dict[int, _Track]:
        """Detection index -> live track: the `claimed` pairs (detection index -> track id) first,
        then the rest by overlap with the tracks' predicted boxes, best first, at `track_iou` or more."""
        live = list(self._tracks)
        by_id = {track.track_id: track for track in live}
        assignment = {detection: by_id[track_id] for detection, track_id in claimed.items()}
        claimed_tracks = {index for index, track in enumerate(live) if track.track_id in claimed.values()}
        predicted = np.array([track.predicted_box(frame_index) for track in live]).reshape(-1, 4)
        for track_index, detection_index in greedy_pairs(box_iou(predicted, boxes), self.track_iou,
                                                         claimed_tracks, set(claimed)):
            assignment[detection_index] = live[track_index]
        return assignment

    def matched(self, frame_index: int, frame: Faces) -> np.ndarray:
        """(N,) the track id each detection of one frame would be matched to by `update` (0: none,
        it would start a track); the tracker is not changed."""
        assignment = self._assign(frame_index, frame.boxes.astype(np.float64), {})
        return np.array([assignment[row].track_id if row in assignment else 0 for row in range(len(frame))], np.int32)

    def update(self, frame_index: int, frame: Faces, claimed: dict[int, int] | None = None) -> Faces:
        """Match the detections of one frame; returns them with track ids, ordered by track id.
        `claimed` (detection index -> track id) assigns those pairs before the overlaps are matched."""
        self._round(frame_index)
        boxes = frame.boxes.astype(np.float64)
        assignment = self._assign(frame_index, boxes, claimed or {})
        track_ids = np.empty(len(frame), np.int32)
        for detection_index in range(len(frame)):
            box = boxes[detection_index]
            landmarks, score = frame.landmarks[detection_index], float(frame.det_score[detection_index])
            track = assignment.get(detection_index)
            if track is None:
                track = self._start(box, landmarks, score, frame_index)
            else:
                track.move(frame_index, box, landmarks, score, detected=True)
            track_ids[detection_index] = track.track_id
        for track in self._tracks:
            if track.last_frame != frame_index:
                track.missed += 1
        self._tracks = [track for track in self._tracks if track.missed <= self.max_missed]
        order = np.argsort(track_ids, kind="stable")
        return frame.select(order).replace(track_id=track_ids[order])

    @property
    def next_id(self) -> int:
        """The id the next new track gets: tracks numbered from it on are newer than this moment."""
        return self._next_id

    def _start(self, box: np.ndarray, landmarks: np.ndarray, score: float, frame_index: int) -> _Track:
        """A new track, still, at `box`, under the next id."""
        track = _Track(self._next_id, box, np.zeros(4), landmarks, score, frame_index, float(box_sizes(box[None])[0]))
        self._next_id += 1
        self._tracks.append(track)
        return track

    def predictions(self, frame_index: int, *, only_missing: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(track ids, predicted boxes (M, 4)) of every live track at `frame_index`, by track id;
        with `only_missing`, of those with no face on that frame yet (a keyframe's detector missed them)."""
        live = sorted(self._tracks, key=lambda track: track.track_id)
        if only_missing:
            live = [track for track in live if track.last_frame != frame_index]
        boxes = np.array([track.predicted_box(frame_index) for track in live], np.float64).reshape(-1, 4)
        return np.array([track.track_id for track in live], np.int32), boxes

    def live_ids(self) -> np.ndarray:
        """(M,) the ids of the live tracks, in order."""
        return np.array(sorted(track.track_id for track in self._tracks), np.int32)

    def last_frames(self, track_ids: np.ndarray) -> np.ndarray:
        """(M,) the frame of each named live track's last face."""
        by_id = {track.track_id: track.last_frame for track in self._tracks}
        return np.array([by_id[int(track_id)] for track_id in track_ids], np.int64)

    def detected_sizes(self, track_ids: np.ndarray) -> np.ndarray:
        """(M,) the size (`box_sizes`) of each named live track's last detection."""
        by_id = {track.track_id: track.detected_size for track in self._tracks}
        return np.array([by_id[int(track_id)] for track_id in track_ids], np.float64)

    def update_tracks(self, frame_index: int, frame: Faces) -> Faces:
        """A round where each face already names its track (boxes refined from the predictions):
        those tracks move on, the others miss. Of two faces that landed on one person, the more
        confident keeps its track (`_move_named`). Returns the kept faces, ordered by track id."""
        self._round(frame_index)
        kept = self._move_named(frame_index, frame)
        moved = set(kept.track_id.tolist())
        for track in self._tracks:
            if track.track_id not in moved:
                track.missed += 1
        self._tracks = [track for track in self._tracks if track.missed <= self.max_missed]
        return kept

    def recover(self, frame_index: int, frame: Faces) -> Faces:
        """Faces of tracks a keyframe's detector missed, found by refining their predicted boxes
        (each face names its track): those tracks move on and their miss of this round is
        forgiven. Of two faces that landed on one person, the more confident keeps its track
        (`_move_named`). Returns the kept faces, ordered by track id."""
        self._round(frame_index)
        return self._move_named(frame_index, frame)

    def _move_named(self, frame_index: int, frame: Faces) -> Faces:
        """Move each face's named track to it; of two overlapping faces (IoU >= 0.5) only one: that of
        a track that had its face on the round before over that of a track back from a gap (which
        has drifted onto a neighbour's face: a face covered by a nearer person, whose track goes on),
        else the more confident. Returns the faces kept, ordered by track id."""
        by_id = {track.track_id: track for track in self._tracks}
        back = ~self.unbroken(frame.track_id, frame_index)
        order = np.lexsort((-frame.det_score, back))  # unbroken tracks first, then by score (stable)
        boxes = frame.boxes[order].astype(np.float64)
        overlaps = box_iou(boxes, boxes)
        kept_positions: list[int] = []
        for position in range(len(order)):
            if all(overlaps[position, other] < 0.5 for other in kept_positions):
                kept_positions.append(position)
        kept = order[kept_positions].tolist()
        for row in kept:
            by_id[int(frame.track_id[row])].move(frame_index, frame.boxes[row].astype(np.float64), frame.landmarks[row],
                                                 float(frame.det_score[row]), detected=False)
        result = frame.select(np.array(sorted(kept), np.int64))
        return result.select(np.argsort(result.track_id, kind="stable"))
