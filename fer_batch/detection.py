"""Face detection with facenet-pytorch's MTCNN, using the weights inside its wheel.

Frames of one video have one size, so they are detected as a batch (one pyramid pass
over many frames, which is what makes the GPU path fast). `scale` shrinks frames
before detection to trade small faces for speed; results are always mapped back to
original-frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from fer_batch import defaults


@dataclass(frozen=True)
class DetectorConfig:
    threshold: float = defaults.DETECTION_THRESHOLD  # MTCNN final-stage (ONet) probability
    min_face_size: int = defaults.MIN_FACE_SIZE  # pixels of the original frame
    scale: float = defaults.DETECTION_SCALE  # frames are resized by this before detection

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"detection threshold must be between 0 and 1, got {self.threshold}")
        if self.min_face_size < 1:
            raise ValueError(f"min face size must be at least 1 pixel, got {self.min_face_size}")
        if not 0.0 < self.scale <= 4.0:
            raise ValueError(f"detection scale must be in (0, 4], got {self.scale}")


@dataclass(frozen=True)
class Detection:
    """One face in original-frame pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left mouth, right mouth

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)


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
    """Batched MTCNN detection for RGB uint8 frames."""

    def __init__(self, config: DetectorConfig = DetectorConfig(), device: torch.device | str = "cpu") -> None:
        from facenet_pytorch.models.utils.detect_face import detect_face

        self.config = config
        self.device = torch.device(device)
        self._detect_face = detect_face
        self._mtcnn = load_mtcnn_networks(self.device)
        # MTCNN's pyramid starts at 12 px; below that it would upsample, which only costs time.
        self._pyramid_min_size = max(12.0, config.min_face_size * config.scale)

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Faces of each frame; frames in one call must share a size (frames of one video do)."""
        if not frames:
            return []
        scale = self.config.scale
        if scale != 1.0:
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            inputs = [cv2.resize(frame, None, fx=scale, fy=scale, interpolation=interpolation) for frame in frames]
        else:
            inputs = frames
        batch = np.ascontiguousarray(np.stack(inputs))
        mtcnn = self._mtcnn
        thresholds = list(mtcnn.thresholds[:2]) + [self.config.threshold]
        with torch.no_grad():
            batch_boxes, batch_points = self._detect_face(
                batch, self._pyramid_min_size, mtcnn.pnet, mtcnn.rnet, mtcnn.onet, thresholds, mtcnn.factor, self.device
            )
        results: list[list[Detection]] = []
        for boxes, points in zip(batch_boxes, batch_points):
            detections = []
            for box, landmarks in zip(np.asarray(boxes).reshape(-1, 5), np.asarray(points).reshape(-1, 5, 2)):
                x1, y1, x2, y2 = (float(value) / scale for value in box[:4])
                if x2 - x1 < self.config.min_face_size and y2 - y1 < self.config.min_face_size:
                    continue
                if x2 <= x1 or y2 <= y1:
                    continue
                detections.append(Detection((x1, y1, x2, y2), float(box[4]), landmarks.astype(np.float32) / scale))
            detections.sort(key=lambda detection: (detection.box[0], detection.box[1]))
            results.append(detections)
        return results
