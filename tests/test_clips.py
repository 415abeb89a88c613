"""Synthetic clips that look like real tracks (training/clips.py Realism) and the jitter they are measured from."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fer_batch.preprocess import Preprocessing
from fer_batch.training.clips import Realism, _low_resolution, _motion_blur, make_clips
from fer_batch.training.data import load_split
from fer_batch.schema import landmark_columns
from fer_batch.training.jitter import alignment_jitter
from tests.conftest import GOLDEN


@pytest.fixture(scope="module")
def publictest(fer_dir):
    return load_split(fer_dir, "test")


def test_realistic_clips_keep_the_story_and_shake_like_real_tracks(publictest):
    """Same seed, same faces and labels as the plain clips; the frames move about as much from one to
    the next as the crowd clip's aligned crops do (far more than the plain clips' shake)."""
    preprocessing = Preprocessing()
    plain = make_clips(publictest, 64, 12, preprocessing, torch.Generator().manual_seed(7))
    real = make_clips(publictest, 64, 12, preprocessing, torch.Generator().manual_seed(7), realism=Realism())
    assert real.frames.shape == plain.frames.shape == (64, 12, 1, 48, 48)
    assert torch.equal(real.labels, plain.labels) and torch.equal(real.is_transition, plain.is_transition)
    assert torch.isfinite(real.frames).all()
    steady = ~plain.is_transition

    def frame_to_frame(clips):
        return (clips.frames[steady, 1:] - clips.frames[steady, :-1]).abs().mean().item()

    assert frame_to_frame(real) > 1.5 * frame_to_frame(plain)


@settings(max_examples=25, deadline=None)
@given(length=st.integers(1, 5), angle=st.floats(0, 3.14), row=st.integers(8, 40), column=st.integers(8, 40))
def test_motion_blur_spreads_a_point_along_a_line_and_keeps_its_light(length, angle, row, column):
    image = torch.zeros(1, 1, 48, 48)
    image[0, 0, row, column] = 1.0
    blurred = _motion_blur(image, torch.tensor([length]), torch.tensor([angle]))
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    if length == 1:
        assert torch.equal(blurred, image)
    assert 1 <= int((blurred > 0).sum()) <= length and blurred.max() >= 1.0 / length - 1e-6


def test_low_resolution_removes_detail_only_where_asked(publictest):
    from fer_batch.preprocess import normalize_crops

    faces = normalize_crops(publictest.images[:4], Preprocessing())
    out = _low_resolution(faces, torch.tensor([0, 20, 0, 40]))
    assert torch.equal(out[0], faces[0]) and torch.equal(out[2], faces[2])

    def detail(images):  # energy of the difference between neighbouring pixels
        return (images[..., 1:] - images[..., :-1]).pow(2).mean().item()

    assert detail(out[1:2]) < detail(faces[1:2]) and detail(out[3:4]) < detail(faces[3:4])
    assert detail(out[1:2]) / detail(faces[1:2]) < detail(out[3:4]) / detail(faces[3:4])  # 20 px loses more than 40


def _track_table(noise_px: float, frames: int = 400, face_px: float = 100.0) -> pd.DataFrame:
    """One video track of a face walking right, its landmarks shaken by `noise_px` (Gaussian, per axis)."""
    template = np.asarray(Preprocessing().landmarks) * face_px / 48
    rng = np.random.default_rng(0)
    rows = []
    for frame in range(frames):
        points = template + [300 + 2.0 * frame, 200] + rng.normal(0, noise_px, 2)
        rows.append({"source": "walk.mp4", "media_type": "video", "track_id": 1, "frame_index": frame,
                     **dict(zip(landmark_columns(), points.reshape(-1)))})
    return pd.DataFrame(rows)


def test_jitter_measures_the_shake_and_not_the_walk():
    """A face moving 2 px a frame with 2 px of landmark noise: the per-frame shift is 2 % of a
    100-px face's crop; the steady walk itself contributes nothing."""
    measured = alignment_jitter(_track_table(noise_px=2.0))
    assert measured["tracks"] == 1 and measured["frame_pairs"] == 399
    assert measured["shift_std"] == pytest.approx(0.02, rel=0.15)
    still = alignment_jitter(_track_table(noise_px=0.0))
    assert still["shift_std"] < 1e-6 and still["angle_std_deg"] < 1e-6


def test_jitter_of_the_shared_crowd_is_what_the_realistic_clips_use():
    """The golden annotate output of ../shared/media (every frame) gives the measured defaults."""
    measured = alignment_jitter(pd.read_parquet(GOLDEN))
    realism = Realism()
    assert measured["tracks"] >= 8
    assert measured["shift_std"] == pytest.approx(realism.shift_std, rel=0.1)
    assert measured["log_scale_std"] == pytest.approx(realism.log_scale_std, rel=0.1)
    assert measured["angle_std_deg"] == pytest.approx(realism.angle_std_deg, rel=0.1)
