"""`Faces`: the faces of one or more frames of one source, as columns.

Every stage of the annotate pipeline passes faces on in this one container, in the
spirit of supervision's `Detections`: the detector creates it, the tracker fills
`track_id`, the crop stage `crops`, the classifier `probabilities`, and the writer
turns it into an Arrow record batch column by column. Per-face fields are arrays
whose first axis is the face; adding a per-face column means adding a field here,
filling it in one stage and naming it in `fer_batch.schema` — the writer, `concat`
and `select` find every field by itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import numpy as np

LANDMARK_COUNT = 5


@dataclass(frozen=True, eq=False)
class Faces:
    """Faces of one source; `source` and `media_type` are per batch, every other field per face."""

    source: str
    media_type: str
    frame_index: np.ndarray  # (N,) int64, frame number in the file
    timestamp_s: np.ndarray  # (N,) float64, from the container
    boxes: np.ndarray  # (N, 4) float32, x1 y1 x2 y2 in original-frame pixels
    landmarks: np.ndarray  # (N, 5, 2) float32: left eye, right eye, nose, mouth left, mouth right
    det_score: np.ndarray  # (N,) float32, MTCNN probability
    detected: np.ndarray  # (N,) bool, False where O-Net refined a track's predicted box (between keyframes, or a face a keyframe's detector missed)
    frame_width: np.ndarray  # (N,) int32
    frame_height: np.ndarray  # (N,) int32
    track_id: np.ndarray | None = None  # (N,) int32, set by the tracker
    crops: np.ndarray | None = None  # (N, H, W) uint8 aligned crops, set by the crop stage
    probabilities: np.ndarray | None = None  # (N, C) float32, set by the classifier
    evidence: np.ndarray | None = None  # (N, C) the CNN-GRU's own probabilities before the temporal filter, kept for the look-ahead stage

    def __len__(self) -> int:
        return int(self.frame_index.shape[0])

    @classmethod
    def empty(cls, source: str, media_type: str) -> "Faces":
        return cls(
            source=source,
            media_type=media_type,
            frame_index=np.empty(0, np.int64),
            timestamp_s=np.empty(0, np.float64),
            boxes=np.empty((0, 4), np.float32),
            landmarks=np.empty((0, LANDMARK_COUNT, 2), np.float32),
            det_score=np.empty(0, np.float32),
            detected=np.empty(0, bool),
            frame_width=np.empty(0, np.int32),
            frame_height=np.empty(0, np.int32),
        )

    @classmethod
    def of_frame(
        cls,
        source: str,
        media_type: str,
        frame_index: int,
        timestamp_s: float,
        frame_size: tuple[int, int],
        boxes: np.ndarray,
        landmarks: np.ndarray,
        det_score: np.ndarray,
        detected: bool,
    ) -> "Faces":
        """The faces found on one frame (frame_size is (width, height))."""
        count = len(boxes)
        return cls(
            source=source,
            media_type=media_type,
            frame_index=np.full(count, frame_index, np.int64),
            timestamp_s=np.full(count, timestamp_s, np.float64),
            boxes=np.asarray(boxes, np.float32).reshape(count, 4),
            landmarks=np.asarray(landmarks, np.float32).reshape(count, LANDMARK_COUNT, 2),
            det_score=np.asarray(det_score, np.float32).reshape(count),
            detected=np.full(count, detected, bool),
            frame_width=np.full(count, frame_size[0], np.int32),
            frame_height=np.full(count, frame_size[1], np.int32),
        )

    @classmethod
    def per_face_fields(cls) -> list[str]:
        """Names of the fields that hold one entry per face."""
        return [field.name for field in dataclasses.fields(cls) if field.name not in ("source", "media_type")]

    def replace(self, **changes: np.ndarray | None) -> "Faces":
        """A copy with some fields set (e.g. `faces.replace(track_id=ids)`); lengths are checked."""
        result = dataclasses.replace(self, **changes)
        for name in self.per_face_fields():
            value = getattr(result, name)
            if value is not None and len(value) != len(result):
                raise ValueError(f"{name} has {len(value)} entries for {len(result)} faces")
        return result

    def select(self, index: np.ndarray | slice | list[int]) -> "Faces":
        """The faces at `index` (an index array, a boolean mask or a slice), in that order."""
        values = {}
        for name in self.per_face_fields():
            value = getattr(self, name)
            values[name] = None if value is None else value[index]
        return dataclasses.replace(self, **values)

    @classmethod
    def concat(cls, batches: list["Faces"]) -> "Faces":
        """One batch from several batches of the same source (fields unset in any batch stay unset)."""
        if not batches:
            raise ValueError("concat needs at least one batch")
        first = batches[0]
        if any(batch.source != first.source for batch in batches):
            raise ValueError("concat joins batches of one source only")
        values = {}
        for name in cls.per_face_fields():
            parts = [getattr(batch, name) for batch in batches]
            values[name] = None if any(part is None for part in parts) else np.concatenate(parts)
        return dataclasses.replace(first, **values)

    def box_areas(self) -> np.ndarray:
        """(N,) box areas in original-frame pixels."""
        sides = np.clip(self.boxes[:, 2:] - self.boxes[:, :2], 0, None)
        return sides[:, 0] * sides[:, 1]
