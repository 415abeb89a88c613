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
from fer_batch.results import read_run
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
    # Ids are not re-issued frame after frame: people entering and leaving over the 4.2 s clip make new
    # tracks, but most faces belong to tracks that last 20 frames or more.
    lengths = video.groupby("track_id").size()
    assert video.track_id.nunique() <= 3 * video.groupby("frame_index").size().max()
    assert lengths[lengths >= 20].sum() / len(video) > 0.9


def test_no_two_crowd_tracks_share_a_face_and_a_lost_track_returns_only_on_a_face(faces, media_dir, annotator):
    """A woman in the crowd turns away behind a passer-by (frames 31-54). Her track used to live on,
    refined at O-Net scores of 0.55-0.82 onto her hair and coat after a four-frame gap, while a
    detection on the back of her head started a second track: two tracks on one head for ten
    frames. A track that had no face on the previous frame now needs the detector's threshold to
    come back, so no two tracks overlap on any frame, and every such return scores that much
    (rows followed back from a detection after a gap start wherever O-Net stops seeing the face).
    (At the defaults no track of the clip has a gap now; with the detector on every frame, one
    comes back by refinement, on frame 102.)"""
    from fer_batch.faces import Faces
    from fer_batch.options import RunOptions

    video = faces[faces.source == "walking-crowd-1080p.mp4"]
    for frame, rows in video.groupby("frame_index"):
        boxes = rows[["x1", "y1", "x2", "y2"]].to_numpy(float)
        overlaps = np.triu(box_iou(boxes, boxes), k=1)
        assert overlaps.max(initial=0.0) < 0.2, (frame, rows.track_id.tolist())
    every_frame = Faces.concat(list(annotator.run([media_dir / "walking-crowd-1080p.mp4"], RunOptions(detect_every=1))))
    every_frame = pd.DataFrame({"track_id": every_frame.track_id, "frame_index": every_frame.frame_index,
                                "det_score": every_frame.det_score, "detected": every_frame.detected})
    returns = []
    for run in (video, every_frame):
        ordered = run.sort_values(["track_id", "frame_index"])
        previous = ordered.groupby("track_id").frame_index.shift()
        after_gap = previous.notna() & (ordered.frame_index - previous > 1)
        # a stretch of a track after a gap that holds a detection was followed back from it, not a return
        stretch = after_gap.astype(int).groupby(ordered.track_id).cumsum()
        followed_back = ordered.groupby([ordered.track_id, stretch]).detected.transform("any").astype(bool)
        returns.append(ordered[after_gap & ~ordered.detected.astype(bool) & ~followed_back])
    returns = pd.concat(returns)
    assert len(returns) >= 1 and (returns.det_score >= 0.9).all(), returns[["track_id", "frame_index", "det_score"]]
    # the woman's track (her face at x 866-934 on frames 0-30) ends within a few frames of turning away
    woman = video[(video.frame_index == 0) & (video.x1.between(850, 880))].track_id
    assert len(woman) == 1 and video[video.track_id == woman.iloc[0]].frame_index.max() <= 40

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


def test_every_table_carries_one_plain_json_metadata_document(media_run, shipped_weights, media_dir):
    from fer_batch.model import file_sha256
    from fer_batch.options import ALL_OPTION_NAMES
    from fer_batch.results import METADATA_KEY

    documents = {
        path.name: json.loads(pq.read_metadata(path).metadata[METADATA_KEY.encode()])
        for path in (media_run.out_path, media_run.summary_path, media_run.tracks_path, media_run.errors_path)
    }
    assert len({json.dumps(document, sort_keys=True) for document in documents.values()}) == 1  # the same everywhere
    metadata = documents["results.parquet"]
    assert metadata["weights"] == shipped_weights.name
    assert metadata["weights_sha256"] == file_sha256(shipped_weights)
    assert metadata["class_names"] == list(EMOTIONS)
    assert metadata["device"] == "cpu" and metadata["version"]
    assert set(metadata["options"]) == set(ALL_OPTION_NAMES)  # every option by its CLI name, as JSON values
    assert metadata["options"]["threshold"] == 0.9 and metadata["options"]["glob"] == []
    assert metadata["inputs"] == [str(media_dir)] and metadata["elapsed_s"] > 0
    assert metadata["source_paths"]["group-six-faces.jpg"] == str((media_dir / "group-six-faces.jpg").resolve())


def test_summary_and_tracks_tables(media_run):
    sources = pd.read_parquet(media_run.summary_path)
    tracks = pd.read_parquet(media_run.tracks_path)
    errors = pd.read_parquet(media_run.errors_path)
    assert len(errors) == 0 and (sources.status == "ok").all()
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


def test_csv_output_reads_back_like_parquet_with_the_same_metadata(tmp_path, media_dir, annotator):
    from fer_batch.api import annotate_to_file

    inputs = [media_dir / "group-six-faces.jpg", media_dir / "walking-crowd-1080p.mp4"]
    as_csv = annotate_to_file(inputs, tmp_path / "faces.csv", annotator=annotator, max_frames=3)
    as_parquet = annotate_to_file(inputs, tmp_path / "faces.parquet", annotator=annotator, max_frames=3)
    plain = pd.read_csv(as_csv.out_path)
    assert len(plain) > 6 and np.allclose(plain[probability_columns(EMOTIONS)].sum(axis=1), 1.0, atol=1e-4)
    csv_run, parquet_run = read_run(as_csv.out_path), read_run(as_parquet.out_path)
    expected = pandas_dtypes(annotation_schema(EMOTIONS))
    assert {column: str(dtype) for column, dtype in csv_run.faces.dtypes.items()} == expected
    pd.testing.assert_frame_equal(csv_run.faces, parquet_run.faces.astype(csv_run.faces.dtypes), atol=1e-6)
    for table in ("sources", "tracks", "errors"):
        pd.testing.assert_frame_equal(getattr(csv_run, table), getattr(parquet_run, table), check_dtype=False, atol=1e-6)
    assert csv_run.metadata.options == parquet_run.metadata.options and csv_run.metadata.options["max_frames"] == 3
    assert csv_run.metadata.inputs == [str(path) for path in inputs]
    assert (tmp_path / "faces.meta.json").is_file() and (tmp_path / "faces.summary.csv").is_file()


def test_python_api_dataframe_rows_and_batches_agree(media_dir, annotator):
    from fer_batch.api import annotate, iter_annotations, iter_faces

    frame = annotate([media_dir / "group-six-faces.jpg"], annotator=annotator)
    assert len(frame) == 6 and list(frame.columns) == annotation_schema(EMOTIONS).names
    assert len(frame.attrs["errors"]) == 0 and frame.attrs["sources"].faces.sum() == 6
    streamed = list(iter_annotations([media_dir / "group-six-faces.jpg"], annotator=annotator))
    assert [face.track_id for face in streamed] == list(frame.track_id)
    rows = pd.DataFrame(streamed)
    assert list(rows.columns) == list(frame.columns)  # a row has the face table's columns
    columns = probability_columns(EMOTIONS) + ["x1", "y1", "x2", "y2", "confidence"]
    assert np.array_equal(rows[columns].to_numpy(np.float32), frame[columns].to_numpy(np.float32))
    assert [face.emotion for face in streamed] == list(frame.emotion)
    batches = list(iter_faces([media_dir / "group-six-faces.jpg"], annotator=annotator))
    assert len(batches) == 1 and batches[0].crops is None  # crops are let go once classified
    assert np.array_equal(batches[0].boxes, frame[["x1", "y1", "x2", "y2"]].to_numpy())


def test_detect_every_k_tracks_in_between(media_dir, annotator):
    from fer_batch.api import annotate

    frame = annotate([media_dir / "walking-crowd-1080p.mp4"], annotator=annotator, detect_every=3, max_frames=6)
    detected_frames = sorted(frame[frame.detected].frame_index.unique())
    assert detected_frames == [0, 3]
    carried = frame[~frame.detected]
    assert len(carried) > 0 and set(carried.frame_index) <= {1, 2, 4, 5}
    assert set(carried.track_id) <= set(frame[frame.detected].track_id)
