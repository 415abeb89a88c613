"""Photos and videos are classified by their own shipped encoders (defaults.weights_by_media_type),
in one run, into one table; `--weights` alone still means one file for everything."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fer_batch import defaults
from fer_batch.labels import EMOTIONS
from fer_batch.model import EmotionNet, checkpoint_payload, load_checkpoint, save_checkpoint
from fer_batch.preprocess import Preprocessing


@pytest.mark.parametrize(
    ("weights", "video_weights", "photo_file", "video_file"),
    [
        (None, None, "photo-default", "video-default"),
        ("mine.pt", None, "mine.pt", "mine.pt"),  # one file of the user's own, for everything
        (None, "clips.pt", "photo-default", "clips.pt"),
        ("mine.pt", "clips.pt", "mine.pt", "clips.pt"),
    ],
)
def test_which_checkpoint_classifies_which_media_type(weights, video_weights, photo_file, video_file):
    named = {"photo-default": defaults.default_weights_path(), "video-default": defaults.default_video_weights_path()}
    chosen = defaults.weights_by_media_type(weights, video_weights)
    assert chosen == {"image": named.get(photo_file, Path(photo_file)), "video": named.get(video_file, Path(video_file))}


def test_the_two_shipped_encoders_are_different_networks_on_the_same_crop(shipped_weights):
    photo, video = load_checkpoint(shipped_weights), load_checkpoint(defaults.default_video_weights_path())
    assert photo.sha256 != video.sha256
    assert photo.class_names == video.class_names == EMOTIONS
    assert (photo.preprocessing.crop_size, photo.preprocessing.landmarks) == (video.preprocessing.crop_size, video.preprocessing.landmarks)


def _annotate(inputs: Path, **model_options):
    from fer_batch.options import RunOptions
    from fer_batch.pipeline import Annotator

    annotator = Annotator(device="cpu", **model_options)
    run = annotator.run([inputs], RunOptions(max_frames=6, temporal="none"))
    faces = list(run)
    return faces, run.metadata()


@pytest.fixture(scope="module")
def photo_and_clip(tmp_path_factory, media_dir) -> Path:
    folder = tmp_path_factory.mktemp("photo_and_clip")
    shutil.copy(media_dir / "group-six-faces.jpg", folder)
    shutil.copy(media_dir / "walking-crowd-1080p.mp4", folder)
    return folder


def test_one_run_classifies_photos_and_videos_each_with_its_own_encoder(photo_and_clip, shipped_weights):
    """The same faces, cut the same way, three ways: the defaults (photo and video encoders), the
    video encoder for everything (--weights), the photo encoder for everything (--video-weights).
    Photo rows follow the photo encoder, video rows the video encoder, and the metadata says so."""
    video_weights = defaults.default_video_weights_path()
    default_faces, default_meta = _annotate(photo_and_clip)
    all_video, _ = _annotate(photo_and_clip, weights=video_weights)
    all_photo, all_photo_meta = _annotate(photo_and_clip, video_weights=shipped_weights)

    def by_type(batches, media_type):
        chosen = [faces for faces in batches if faces.media_type == media_type]
        return np.concatenate([faces.boxes for faces in chosen]), np.concatenate([faces.probabilities for faces in chosen])

    for media_type, same_as, other in (("image", all_photo, all_video), ("video", all_video, all_photo)):
        boxes, probabilities = by_type(default_faces, media_type)
        same_boxes, same_probabilities = by_type(same_as, media_type)
        other_boxes, other_probabilities = by_type(other, media_type)
        assert len(boxes) >= 6 and np.array_equal(boxes, same_boxes) and np.array_equal(boxes, other_boxes)
        np.testing.assert_allclose(probabilities, same_probabilities, atol=1e-6)
        assert np.abs(probabilities - other_probabilities).max() > 0.05  # the other network answers otherwise
    assert default_meta.weights == defaults.DEFAULT_WEIGHTS_NAME and default_meta.video_weights == defaults.VIDEO_WEIGHTS_NAME
    assert default_meta.video_weights_sha256 != default_meta.weights_sha256
    assert default_meta.video_precision == default_meta.precision == "int8"
    assert all_photo_meta.video_weights_sha256 == all_photo_meta.weights_sha256
    assert default_meta.options["video_weights"] is None and all_photo_meta.options["video_weights"] == str(shipped_weights)


def test_video_weights_that_read_another_crop_or_other_emotions_are_refused_by_name(tmp_path, media_dir):
    from fer_batch.cli import app

    config = load_checkpoint(defaults.default_weights_path()).model.config
    other_labels = tmp_path / "other-labels.pt"
    save_checkpoint(checkpoint_payload(EmotionNet(config), tuple(reversed(EMOTIONS)), Preprocessing()), other_labels)
    other_crop = tmp_path / "other-crop.pt"
    save_checkpoint(checkpoint_payload(EmotionNet(config), EMOTIONS, Preprocessing(crop_size=64)), other_crop)
    for weights, cause in ((other_labels, "predict neutral, surprise"), (other_crop, "different face crop")):
        result = CliRunner().invoke(app, ["annotate", str(media_dir / "group-six-faces.jpg"), "--out", str(tmp_path / "out.csv"),
                                          "--video-weights", str(weights), "--quiet"])
        assert result.exit_code == 2, result.output
        assert weights.name in result.output and cause in result.output
        assert not (tmp_path / "out.csv").exists()


def test_metadata_written_before_the_video_encoder_still_reads():
    """Outputs of versions with one checkpoint have no video keys: they read with them empty."""
    import json

    from fer_batch.results import RunMetadata

    old = {"version": "0.1.0", "weights": "fer-cnn-gru.pt", "weights_sha256": "ab" * 32, "class_names": list(EMOTIONS),
           "device": "cpu", "options": {"detect_every": 1}, "precision": "int8"}
    metadata = RunMetadata.from_json(json.dumps(old))
    assert (metadata.video_weights, metadata.video_weights_sha256, metadata.video_precision) == ("", "", "")
    assert RunMetadata.from_json(metadata.to_json()) == metadata
