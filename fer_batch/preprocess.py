"""Face crop preprocessing, defined once for training, evaluation and annotation.

A detected face is warped so that its five MTCNN landmarks land where the average
FER2013 face has them (eyes level, same framing), then converted to the 48x48
grayscale crop the network was trained on. The template is calibrated by running
MTCNN on upscaled FER2013 images (`python -m fer_batch.training.calibrate`), and is
stored in every checkpoint so inference uses the framing the weights were trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
import torch

# Landmark order is MTCNN's: left eye, right eye, nose, left mouth corner, right mouth corner
# (left/right as seen in the image). Coordinates are pixels of the 48x48 crop.
# Values measured by `python -m fer_batch.training.calibrate --data ../shared/fer2013 --count 1000`:
# MTCNN found one face in 858 of 1,000 training images (4x upscaled, padded); these are
# the per-landmark medians, made left-right symmetric (median absolute deviation 1.3-2.0 px).
FER2013_LANDMARKS_48: tuple[tuple[float, float], ...] = (
    (14.9, 18.7),
    (33.1, 18.7),
    (24.0, 29.0),
    (16.4, 37.6),
    (31.6, 37.6),
)


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn a detected face into a network input."""

    crop_size: int = 48
    landmarks: tuple[tuple[float, float], ...] = field(default=FER2013_LANDMARKS_48)
    pixel_mean: float = 0.5
    pixel_std: float = 0.25
    tta_flip: bool = True

    def to_dict(self) -> dict:
        data = asdict(self)
        data["landmarks"] = [list(point) for point in self.landmarks]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        values = dict(data)
        values["landmarks"] = tuple(tuple(float(v) for v in point) for point in values["landmarks"])
        return cls(**values)


def similarity_to_template(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """2x3 matrix mapping frame pixels to crop pixels: eyes made level, then the
    scale and shift that best fit all five landmarks to the template."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    targets = np.asarray(template, dtype=np.float64).reshape(5, 2)
    eye_vector = points[1] - points[0]
    template_eye_vector = targets[1] - targets[0]
    angle = np.arctan2(eye_vector[1], eye_vector[0]) - np.arctan2(template_eye_vector[1], template_eye_vector[0])
    cos, sin = np.cos(-angle), np.sin(-angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    rotated = points @ rotation.T
    rotated_centred = rotated - rotated.mean(axis=0)
    targets_centred = targets - targets.mean(axis=0)
    denominator = float((rotated_centred**2).sum())
    if denominator < 1e-9:
        raise ValueError("degenerate landmarks: all five points coincide")
    scale = float((rotated_centred * targets_centred).sum()) / denominator
    if scale <= 0:
        raise ValueError("landmarks are mirrored relative to the template")
    linear = scale * rotation
    shift = targets.mean(axis=0) - linear @ points.mean(axis=0)
    return np.hstack([linear, shift[:, None]])


def align_face(gray_frame: np.ndarray, landmarks: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Warp one face of a grayscale frame into a crop_size x crop_size uint8 crop.

    Large faces are first shrunk with area interpolation so that the final warp
    does not alias (FER2013 itself was made by area downscaling).
    """
    size = preprocessing.crop_size
    matrix = similarity_to_template(landmarks, np.asarray(preprocessing.landmarks))
    scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))
    if scale < 0.5:
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
        source_corners = corners @ inverse.T
        height, width = gray_frame.shape[:2]
        x0 = int(np.clip(np.floor(source_corners[:, 0].min()) - 2, 0, width - 1))
        y0 = int(np.clip(np.floor(source_corners[:, 1].min()) - 2, 0, height - 1))
        x1 = int(np.clip(np.ceil(source_corners[:, 0].max()) + 2, x0 + 1, width))
        y1 = int(np.clip(np.ceil(source_corners[:, 1].max()) + 2, y0 + 1, height))
        region = gray_frame[y0:y1, x0:x1]
        shrink = scale * 1.5
        new_width = max(1, int(round(region.shape[1] * shrink)))
        new_height = max(1, int(round(region.shape[0] * shrink)))
        region = cv2.resize(region, (new_width, new_height), interpolation=cv2.INTER_AREA)
        actual = np.array([new_width / (x1 - x0), new_height / (y1 - y0)])
        linear = matrix[:, :2] / actual[None, :]
        shift = matrix[:, :2] @ np.array([x0, y0], dtype=np.float64) + matrix[:, 2]
        matrix = np.hstack([linear, shift[:, None]])
        gray_frame = region
    return cv2.warpAffine(
        gray_frame,
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def to_grayscale(rgb_frame: np.ndarray) -> np.ndarray:
    """RGB (or already gray) uint8 frame to a single-channel uint8 frame."""
    if rgb_frame.ndim == 2:
        return rgb_frame
    return cv2.cvtColor(rgb_frame, cv2.COLOR_RGB2GRAY)


def normalize_crops(crops: np.ndarray | torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 crops (N, H, W) to the float tensor (N, 1, H, W) the network takes."""
    tensor = torch.as_tensor(crops)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
    tensor = tensor.float().div_(255.0)
    return tensor.sub_(preprocessing.pixel_mean).div_(preprocessing.pixel_std)
