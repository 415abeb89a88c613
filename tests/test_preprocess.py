"""The alignment that turns a detected face into a FER2013-like crop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fer_batch.preprocess import Preprocessing, align_face, normalize_crops, similarity_to_template


def _frame_with_marks(landmarks: np.ndarray, shape=(900, 1200)) -> np.ndarray:
    frame = np.zeros(shape, np.uint8)
    for x, y in landmarks:
        cv2.circle(frame, (int(round(x)), int(round(y))), 3 if shape[0] < 1000 else 12, 255, -1)
    return frame


def _mark_centres(crop: np.ndarray) -> np.ndarray:
    count, _, _, centroids = cv2.connectedComponentsWithStats((crop > 100).astype(np.uint8))
    return centroids[1:]


@pytest.mark.parametrize("angle_deg, scale", [(0.0, 2.0), (25.0, 3.0), (-40.0, 1.2), (10.0, 14.0)])
def test_landmarks_land_on_the_template(angle_deg, scale):
    """A face rotated and scaled in the frame comes out with its landmarks on the template, eyes level."""
    preprocessing = Preprocessing()
    template = np.asarray(preprocessing.landmarks)
    angle = np.radians(angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    placed = (template - 24) @ rotation.T * scale + np.array([600, 450])
    frame = _frame_with_marks(placed, shape=(2400, 2400) if scale > 10 else (900, 1200))
    crop = align_face(frame, placed, preprocessing)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    found = _mark_centres(crop)
    assert len(found) == 5
    for point in template:
        assert np.min(np.linalg.norm(found - point, axis=1)) < 1.5


def test_similarity_makes_eyes_level():
    landmarks = np.array([[100, 120], [160, 100], [135, 140], [115, 170], [160, 155]], dtype=float)
    matrix = similarity_to_template(landmarks, np.asarray(Preprocessing().landmarks))
    eyes = np.c_[landmarks[:2], np.ones(2)] @ matrix.T
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-6
    assert eyes[0, 0] < eyes[1, 0]


def test_degenerate_landmarks_are_rejected():
    with pytest.raises(ValueError):
        similarity_to_template(np.ones((5, 2)), np.asarray(Preprocessing().landmarks))


def test_normalisation_matches_the_checkpoint_parameters():
    preprocessing = Preprocessing(pixel_mean=0.5, pixel_std=0.25)
    crops = np.stack([np.zeros((48, 48), np.uint8), np.full((48, 48), 255, np.uint8)])
    tensor = normalize_crops(crops, preprocessing)
    assert tensor.shape == (2, 1, 48, 48)
    assert float(tensor[0].mean()) == pytest.approx(-2.0)
    assert float(tensor[1].mean()) == pytest.approx(2.0)


def test_preprocessing_round_trips_through_a_dict():
    preprocessing = Preprocessing()
    assert Preprocessing.from_dict(preprocessing.to_dict()) == preprocessing
