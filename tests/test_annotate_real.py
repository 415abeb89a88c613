"""End to end on the shared photos and video: real MTCNN, the shipped checkpoint, real files read back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fer_batch.labels import EMOTIONS
from fer_batch.schema import annotation_schema, landmark_columns, pandas_dtypes, probability_columns
from fer_batch.tracking import box_iou
from fer_batch.writers import read_annotations
from tests.conftest import CROWD_FRAMES


@pytest.fixture(scope="module")
def faces(media_run) -> pd.DataFrame:
    return pd.read_parquet(media_run.out_path)


def test_group_photo_has_six_faces_and_each_portrait_one(faces):
    counts = faces.groupby("source").size().to_dict()
    assert counts["group-six-faces.jpg"] == 6
    portraits = {name: count for name, count in counts.items() if name.startswith("portrait-")}
    assert len(portraits) == 4 and set(portraits.values()) == {1}
    group = faces[faces.source == "group-six-faces.jpg"]
    assert sorted(group.track_id) == [1, 2, 3, 4, 5, 6]  # each image face is its own track


def test_boxes_are_in_original_pixels_with_landmarks_inside(faces):
    assert (faces.x1 < faces.x2).all() and (faces.y1 < faces.y2).all()
    assert (faces.x2 <= faces.frame_width + 5).all() and (faces.y2 <= faces.frame_height + 5).all()
    for point in ("left_eye", "right_eye", "nose"):
        x, y = faces[f"lm_{point}_x"], faces[f"lm_{point}_y"]
        assert ((x > faces.x1 - 5) & (x < faces.x2 + 5) & (y > faces.y1 - 5) & (y < faces.y2 + 5)).mean() > 0.95
    portraits = faces[faces.source.str.startswith("portrait-")]
    assert (portraits.x2 - portraits.x1 > 200).all()  # the big portrait faces, not tiny background ones


def test_crowd_video_track_ids_are_stable_frame_to_frame(faces):
    video = faces[faces.source == "walking-crowd-1080p.mp4"]
    assert sorted(video.frame_index.unique()) == list(range(CROWD_FRAMES))
    assert np.allclose(video.groupby("frame_index").timestamp_s.first().values, np.arange(CROWD_FRAMES) / 25.0, atol=1e-3)
    persisting, same_id = 0, 0
    for frame in range(CROWD_FRAMES - 1):
        now = video[video.frame_index == frame]
        later = video[video.frame_index == frame + 1]
        overlaps = box_iou(now[["x1", "y1", "x2", "y2"]].to_numpy(float), later[["x1", "y1", "x2", "y2"]].to_numpy(float))
        for i, j in zip(*np.nonzero(overlaps > 0.5)):
            persisting += 1
            same_id += int(now.track_id.iloc[i] == later.track_id.iloc[j])
    assert persisting >= 4 * (CROWD_FRAMES - 1)  # several faces persist through the clip
    assert same_id / persisting > 0.97
    per_frame = video.groupby("frame_index").size()
    assert video.track_id.nunique() <= 2 * per_frame.max()  # ids are not re-issued frame after frame


def test_parquet_schema_dtypes_and_probabilities(media_run, faces):
    table = pq.read_table(media_run.out_path)
    assert table.schema.remove_metadata() == annotation_schema(EMOTIONS)
    probabilities = faces[probability_columns(EMOTIONS)]
    assert (probabilities.dtypes == np.float32).all()
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert (faces.emotion == probabilities.idxmax(axis=1).str.removeprefix("prob_")).all()
    assert np.allclose(faces.confidence, probabilities.max(axis=1))
    assert faces.frame_index.dtype == np.int64 and faces.track_id.dtype == np.int32
    assert faces.timestamp_s.dtype == np.float64 and faces.detected.dtype == bool
    assert all(faces[column].dtype == np.float32 for column in ["x1", "det_score", *landmark_columns()])


def test_parquet_metadata_names_version_weights_and_options(media_run, shipped_weights):
    from fer_batch.model import file_sha256

    metadata = {k.decode(): v.decode() for k, v in pq.read_schema(media_run.out_path).metadata.items()}
    assert metadata["fer_batch.weights"] == shipped_weights.name
    assert metadata["fer_batch.weights_sha256"] == file_sha256(shipped_weights)
    assert json.loads(metadata["fer_batch.class_names"]) == list(EMOTIONS)
    options = json.loads(metadata["fer_batch.options"])
    assert options["sampling"]["max_frames"] == CROWD_FRAMES and options["detector"]["threshold"] > 0
    assert metadata["fer_batch.version"]


def test_summary_and_tracks_tables(media_run):
    sources = pd.read_parquet(media_run.summary_path)
    tracks = pd.read_parquet(media_run.tracks_path)
    errors = pd.read_parquet(media_run.errors_path)
    assert len(errors) == 0
    video = sources.set_index("source").loc["walking-crowd-1080p.mp4"]
    assert video.frames_read == CROWD_FRAMES and video.frames_annotated == CROWD_FRAMES
    assert video.faces == len(pd.read_parquet(media_run.out_path).query("source == 'walking-crowd-1080p.mp4'"))
    shares = sources[[f"share_{name}" for name in EMOTIONS]].sum(axis=1)
    assert np.allclose(shares, 1.0, atol=1e-4)
    video_tracks = tracks[tracks.source == "walking-crowd-1080p.mp4"]
    assert len(video_tracks) == video.tracks
    assert (video_tracks.last_frame >= video_tracks.first_frame).all()
    assert video_tracks.length.sum() == video.faces
    means = video_tracks[[f"mean_prob_{name}" for name in EMOTIONS]].sum(axis=1)
    assert np.allclose(means, 1.0, atol=1e-3)


def test_csv_output_reads_back_with_documented_dtypes(tmp_path, media_dir, annotator):
    from fer_batch.api import annotate_to_file

    result = annotate_to_file([media_dir / "group-six-faces.jpg"], tmp_path / "faces.csv", annotator=annotator)
    plain = pd.read_csv(result.out_path)
    assert len(plain) == 6 and np.allclose(plain[probability_columns(EMOTIONS)].sum(axis=1), 1.0, atol=1e-4)
    typed = read_annotations(result.out_path)
    expected = pandas_dtypes(annotation_schema(EMOTIONS))
    assert {column: str(dtype) for column, dtype in typed.dtypes.items()} == expected
    assert (tmp_path / "faces.summary.csv").is_file() and (tmp_path / "faces.errors.csv").is_file()
    assert json.loads((tmp_path / "faces.meta.json").read_text())["fer_batch.weights"]


def test_python_api_dataframe_and_stream(media_dir, annotator):
    from fer_batch.api import annotate, iter_annotations

    frame = annotate([media_dir / "group-six-faces.jpg"], annotator=annotator)
    assert len(frame) == 6 and list(frame.columns) == annotation_schema(EMOTIONS).names
    assert len(frame.attrs["errors"]) == 0 and frame.attrs["sources"].faces.sum() == 6
    streamed = list(iter_annotations([media_dir / "group-six-faces.jpg"], annotator=annotator))
    assert [face.track_id for face in streamed] == list(frame.track_id)
    assert np.allclose(np.stack([face.probabilities for face in streamed]), frame[probability_columns(EMOTIONS)].to_numpy())


def test_detect_every_k_tracks_in_between(tmp_path, media_dir, annotator):
    from fer_batch.api import annotate
    from fer_batch.media import SamplingConfig

    sparse = annotator.with_options(detect_every=3, sampling=SamplingConfig(max_frames=6))
    frame = annotate([media_dir / "walking-crowd-1080p.mp4"], annotator=sparse)
    detected_frames = sorted(frame[frame.detected].frame_index.unique())
    assert detected_frames == [0, 3]
    carried = frame[~frame.detected]
    assert len(carried) > 0 and set(carried.frame_index) <= {1, 2, 4, 5}
    assert set(carried.track_id) <= set(frame[frame.detected].track_id)
