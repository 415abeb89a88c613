"""Face detection with facenet-pytorch's MTCNN, using the weights inside its wheel.

Frames of one video have one size, so they are detected as a batch (one pyramid pass
over many frames, which is what makes the GPU path fast). `detect_scale` shrinks
frames before detection to trade small faces for speed; boxes and landmarks are
always returned in original-frame pixels, as a `Faces` batch.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from fer_batch import defaults
from fer_batch.faces import Faces
from fer_batch.media import Frame


def load_mtcnn_networks(device: torch.device) -> "object":
    """facenet-pytorch's MTCNN with its shipped P/R/O-Net weights (never downloads)."""
    try:
        from facenet_pytorch import MTCNN
    except ImportError as error:  # pragma: no cover - exercised only on a broken install
        raise ImportError(
            "facenet-pytorch is not installed; install it without its old pins: "
            "pip install --no-deps facenet-pytorch==2.6.0"
        ) from error
    return MTCNN(keep_all=True, device=device)


class FaceDetector:
    """Batched MTCNN detection of RGB uint8 frames; loaded once, used with any run's options."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        from facenet_pytorch.models.utils.detect_face import detect_face

        self.device = torch.device(device)
        self._detect_face = detect_face
        self._mtcnn = load_mtcnn_networks(self.device)

    def detect(
        self,
        frames: list[Frame],
        source: str = "",
        media_type: str = "image",
        *,
        threshold: float = defaults.THRESHOLD,
        min_face_size: int = defaults.MIN_FACE_SIZE,
        detect_scale: float = defaults.DETECT_SCALE,
    ) -> Faces:
        """The faces of all `frames` (which must share a size, as frames of one video do), frame by frame,
        each frame's faces ordered left to right."""
        faces = Faces.empty(source, media_type)
        if not frames:
            return faces
        if detect_scale != 1.0:
            interpolation = cv2.INTER_AREA if detect_scale < 1 else cv2.INTER_LINEAR
            inputs = [
                cv2.resize(frame.rgb, None, fx=detect_scale, fy=detect_scale, interpolation=interpolation)
                for frame in frames
            ]
        else:
            inputs = [frame.rgb for frame in frames]
        batch = np.ascontiguousarray(np.stack(inputs))
        mtcnn = self._mtcnn
        thresholds = list(mtcnn.thresholds[:2]) + [threshold]
        # MTCNN's pyramid starts at 12 px; below that it would upsample, which only costs time.
        pyramid_min_size = max(12.0, min_face_size * detect_scale)
        with torch.no_grad():
            batch_boxes, batch_points = self._detect_face(
                batch, pyramid_min_size, mtcnn.pnet, mtcnn.rnet, mtcnn.onet, thresholds, mtcnn.factor, self.device
            )
        parts = []
        for frame, boxes, points in zip(frames, batch_boxes, batch_points):
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
            points = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2)
            corners = boxes[:, :4] / detect_scale
            widths, heights = corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]
            keep = ~((widths < min_face_size) & (heights < min_face_size)) & (widths > 0) & (heights > 0)
            corners, scores, points = corners[keep], boxes[keep, 4], points[keep] / detect_scale
            order = np.lexsort((corners[:, 1], corners[:, 0]))  # left to right, then top to bottom
            count = len(order)
            height, width = frame.rgb.shape[:2]
            parts.append(
                faces.replace(
                    frame_index=np.full(count, frame.index, np.int64),
                    timestamp_s=np.full(count, frame.timestamp_s, np.float64),
                    boxes=corners[order].astype(np.float32),
                    landmarks=points[order].astype(np.float32),
                    det_score=scores[order].astype(np.float32),
                    detected=np.ones(count, bool),
                    frame_width=np.full(count, width, np.int32),
                    frame_height=np.full(count, height, np.int32),
                )
            )
        return Faces.concat(parts)
