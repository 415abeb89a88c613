"""The Ray Data engine: its plan (property tests), its stitching, and equality with the local
engine on a local Ray cluster started here (2 CPUs), with a video cut into 3 segments."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings, strategies as st
from typer.testing import CliRunner

from fer_batch.cli import app
from fer_batch.faces import Faces
from fer_batch.options import RunOptions
from fer_batch.tracking import box_iou
from fer_batch.ray import SourcePiece, overlap_frames, plan_segments, stitch_segments
from fer_batch.media import MediaSource

runner = CliRunner()
CLIP_FRAMES = 48
SEGMENT_S = 0.64  # 16 frames at 25 fps: the clip is cut in 3
KEY = ["source", "frame_index", "track_id"]


@settings(max_examples=300, deadline=None)
@given(
    frame_count=st.integers(1, 3000), every_nth=st.integers(1, 4), detect_every=st.integers(1, 6),
    detect_batch=st.integers(1, 8), max_frames=st.none() | st.integers(1, 800), segment_s=st.floats(0.04, 30),
    max_missed=st.integers(0, 8), small_faces_every=st.integers(1, 12),
)
def test_segments_own_every_frame_once_and_start_where_the_whole_video_starts_a_window(
    frame_count, every_nth, detect_every, detect_batch, max_frames, segment_s, max_missed, small_faces_every
):
    options = RunOptions(every_nth=every_nth, detect_every=detect_every, detect_batch=detect_batch,
                         max_frames=max_frames, max_missed=max_missed, small_faces_every=small_faces_every)
    segments = plan_segments(frame_count, 25.0, options, segment_s)
    end = frame_count if max_frames is None else min(frame_count, (max_frames - 1) * every_nth + 1)
    owned = []
    for start, owned_start, stop in segments:
        stop = frame_count if stop is None else stop
        owned += range(owned_start, stop)
        step = every_nth * detect_every * detect_batch
        small_step = every_nth * detect_every * options.small_face_period
        assert start % step == 0 and owned_start % step == 0  # same detector windows and keyframes
        assert start % small_step == 0 and owned_start % small_step == 0  # and small-face frames
        assert start == 0 or owned_start - start >= (max_missed + 2) * detect_every * every_nth  # settled tracker
    assert owned == list(range(end))
    sampled = [index for index in owned if index % every_nth == 0]
    expected = [index for index in range(frame_count) if index % every_nth == 0][: max_frames or None]
    assert sampled == expected  # the segments annotate exactly the frames the whole-video run does


def test_fps_sampling_with_keyframes_or_a_frame_limit_is_not_cut():
    def on_cpu(**changes) -> RunOptions:  # segments are planned with the options the workers run
        return RunOptions(**changes).for_device("cpu")

    assert plan_segments(5000, 25.0, on_cpu(fps=5, detect_every=3), 10) == [(0, 0, None)]
    assert plan_segments(5000, 25.0, on_cpu(fps=5, max_frames=10), 10) == [(0, 0, None)]
    assert plan_segments(5000, 25.0, on_cpu(fps=5), 10) == [(0, 0, None)]  # keyframes every 5th on a CPU
    assert plan_segments(5000, 25.0, on_cpu(fps=5, detect_every=1), 10) == [(0, 0, None)]  # small faces every 5th
    assert plan_segments(0, 25.0, on_cpu(), 10) == [(0, 0, None)]  # unknown length: read whole
    every_frame = on_cpu(fps=5, detect_every=1, small_faces_every=1)
    cut = plan_segments(5000, 25.0, every_frame, 10)
    assert len(cut) == 20 and all(owned - start >= overlap_frames(every_frame, 25.0) for start, owned, _ in cut[1:])
    assert plan_segments(5000, 25.0, RunOptions(fps=5).for_device("cuda"), 10) == cut  # a GPU searches every frame


def _piece(frames: list[int], tracks: list[int], boxes: list[list[float]]) -> SourcePiece:
    source = MediaSource(None, "v.mp4", "video")
    count = len(frames)
    faces = Faces("v.mp4", "video", np.array(frames, np.int64), np.array(frames, np.float64) / 25,
                  np.array(boxes, np.float32), np.zeros((count, 5, 2), np.float32), np.ones(count, np.float32),
                  np.ones(count, bool), np.full(count, 640, np.int32), np.full(count, 360, np.int32),
                  track_id=np.array(tracks, np.int32))
    return SourcePiece(source, 0, faces, np.arange(count, dtype=np.float32)[:, None], count, count)


def test_stitching_continues_tracks_seen_in_the_overlap_and_numbers_new_ones_on():
    a, b, c = [0, 0, 10, 10], [100, 0, 110, 10], [200, 0, 210, 10]
    first = _piece([0, 0, 1, 1, 2, 2, 3], [1, 2, 1, 2, 1, 2, 1], [a, b, a, b, a, b, a])
    # The second segment reads from frame 2 (overlap 2-3) and owns 4-5: its own ids start at 1 in
    # another order; its track 3 appears after the cut and is new.
    second = _piece([2, 2, 3, 4, 4, 5, 5], [1, 2, 2, 1, 2, 2, 3], [b, a, a, b, a, a, c])
    faces, features = stitch_segments([first, second], [0, 4])
    assert faces.frame_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 4, 4, 5, 5]
    assert faces.track_id.tolist() == [1, 2, 1, 2, 1, 2, 1, 1, 2, 1, 3]  # b stays 2, a stays 1, c is new
    assert faces.boxes[7].tolist() == a and faces.boxes[8].tolist() == b
    assert features[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 4, 3, 5, 6]  # the features follow their faces


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the ray engine needs the [ray] extra")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, media_dir):
    folder = tmp_path_factory.mktemp("ray-inputs")
    capture = cv2.VideoCapture(str(media_dir / "walking-crowd-1080p.mp4"))
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 360))
    for _ in range(CLIP_FRAMES):
        ok, frame = capture.read()
        assert ok
        writer.write(cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA))
    writer.release()
    shutil.copy(media_dir / "group-six-faces.jpg", folder / "group.jpg")
    (folder / "broken.png").write_text("not a png")
    return folder


def test_ray_engine_writes_the_local_engines_rows(ray_cluster, inputs, tmp_path, annotator):
    """The local engine's rows and track ids, across 3 stitched segments: every detected face, with
    its box exactly; the faces O-Net refined from a track's predicted box (where the keyframe's
    detector missed them, or left out a small face between small-face frames) within a few
    pixels, most within hundredths of one, or, rarely, one scored just over the refinement
    threshold on one side and just under on the other; the probabilities within 0.05."""
    from fer_batch.api import annotate_to_file
    from fer_batch.results import METADATA_KEY, read_run

    # One torch thread on both sides: then even the last float bits agree (oneDNN's sums depend on threads).
    from fer_batch.pipeline import Annotator

    import torch

    threads = torch.get_num_threads()
    try:
        local = annotate_to_file([inputs], tmp_path / "local/", annotator=Annotator(device="cpu", threads=1))
    finally:
        torch.set_num_threads(threads)  # the setting is per process: later tests run as they would alone
    out = tmp_path / "ray-results"
    result = runner.invoke(app, ["annotate", str(inputs), "--out", f"{out}/", "--engine", "ray", "--segment-seconds",
                                 str(SEGMENT_S), "--threads", "1", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    run = read_run(out)
    assert run.metadata.options["engine"] == "ray" and run.metadata.options["segment_s"] == SEGMENT_S
    local_metadata = read_run(tmp_path / "local").metadata  # the photo's and the video's encoders, as locally
    assert (run.metadata.video_weights, run.metadata.video_weights_sha256, run.metadata.video_precision) == (
        local_metadata.video_weights, local_metadata.video_weights_sha256, local_metadata.video_precision)
    assert run.metadata.video_weights_sha256 != run.metadata.weights_sha256
    ours = pd.read_parquet(out).sort_values(KEY).reset_index(drop=True)
    theirs = pd.read_parquet(tmp_path / "local").sort_values(KEY).reset_index(drop=True)
    assert len(ours) == len(run.faces) > 100 and local.summary.totals["faces"] == len(theirs)
    # A refined box starts from its track's predicted box, whose velocity averages the track's past;
    # a segment has seen that past only since its overlap. Rows only one side has are such faces.
    joined = ours.merge(theirs, on=KEY, how="outer", suffixes=("", "_local"), indicator=True)
    one_sided = joined[joined._merge != "both"]
    assert not one_sided.detected.fillna(one_sided.detected_local).astype(bool).any(), one_sided[KEY]
    assert len(one_sided) <= 0.01 * len(theirs), one_sided[KEY]
    both = joined[joined._merge == "both"]  # the same rows under the same track ids: stitched exactly
    assert len(both) >= 0.99 * len(theirs) and (both.detected == both.detected_local).all()
    numbers = [column for column in ours.columns if column.startswith(("prob_", "x", "y", "lm_", "det_score"))]
    gaps = np.abs(both[numbers].to_numpy(np.float64) - both[[f"{column}_local" for column in numbers]].to_numpy(np.float64))
    geometry = [index for index, column in enumerate(numbers) if not column.startswith("prob_")]
    assert gaps[both.detected.to_numpy(bool)][:, geometry].max() < 1e-3, dict(zip(numbers, gaps.max(axis=0)))
    # Refined boxes start from the prediction: a few pixels apart at most (measured: IoU >= 0.85 on
    # 9 of 110 refined rows, the others within 0.05 px); the probabilities hardly move.
    boxes = ["x1", "y1", "x2", "y2"]
    refined = both[~both.detected.astype(bool)]
    overlaps = np.diag(box_iou(refined[boxes].to_numpy(np.float64), refined[[f"{b}_local" for b in boxes]].to_numpy(np.float64)))
    assert overlaps.min() >= 0.8 and (gaps[~both.detected.to_numpy(bool)][:, geometry].max(axis=1) < 0.05).mean() >= 0.8
    probabilities = [index for index, column in enumerate(numbers) if column.startswith("prob_")]
    assert gaps[:, probabilities].max() < 0.05, dict(zip(numbers, gaps.max(axis=0)))
    assert (both.emotion == both.emotion_local).mean() >= 0.99
    assert list(ours.columns) == list(theirs.columns) and (ours.dtypes == theirs.dtypes).all()
    clip_tracks = theirs[theirs.source == "clip.mp4"].groupby("track_id").frame_index.agg(["min", "max"])
    assert ((clip_tracks["min"] < 16) & (clip_tracks["max"] >= 32)).any()  # a track crosses both cuts

    local_run = read_run(tmp_path / "local")
    columns = ["source", "status", "frames_read", "frames_annotated", "errors"]
    assert run.sources[columns].reset_index(drop=True).equals(local_run.sources[columns].reset_index(drop=True))
    assert set(zip(run.tracks.source, run.tracks.track_id)) == set(zip(local_run.tracks.source, local_run.tracks.track_id))
    assert run.errors.to_dict("records") == local_run.errors.to_dict("records")
    parts = sorted(out.glob("ray-part-*.parquet"))
    assert parts and all(json.loads(pq.read_schema(part).metadata[METADATA_KEY.encode()])["options"]["engine"] == "ray"
                         for part in parts)


def test_annotate_dataset_is_a_ray_dataset_and_outputs_go_to_filesystem_uris(ray_cluster, inputs, tmp_path):
    from fer_batch.ray import annotate_dataset, annotate_to_directory
    from fer_batch.results import read_run
    from fer_batch.schema import annotation_schema

    dataset = annotate_dataset([inputs / "group.jpg"], device="cpu", threads=1)
    rows = dataset.to_pandas()
    assert list(rows.columns) == annotation_schema(tuple(c[5:] for c in rows.columns if c.startswith("prob_"))).names
    assert len(rows) == 6 and rows.track_id.tolist() == [1, 2, 3, 4, 5, 6]
    # A URI goes through pyarrow's filesystems (s3://, gs://, ... alike); file:// is the one a test can reach.
    result = annotate_to_directory([inputs / "group.jpg"], (tmp_path / "uri-out").as_uri(), device="cpu", threads=1)
    run = read_run(tmp_path / "uri-out")
    assert result.rows == len(run.faces) == 6 and run.sources.faces.tolist() == [6]
    probabilities = [column for column in rows.columns if column.startswith("prob_")]
    written = run.faces.sort_values("track_id")[probabilities].to_numpy(np.float64)
    assert np.abs(written - rows.sort_values("track_id")[probabilities].to_numpy(np.float64)).max() < 1e-6


@pytest.mark.parametrize("arguments, message", [
    (["--out", "r.parquet"], "dataset folder"),
    (["--out", "results/", "--resume"], "--resume is for the local engine"),
    (["--out", "s3://bucket/results/", "--report", "r.html"], "need a local --out"),
])
def test_ray_engine_refuses_what_it_cannot_do(arguments, message, inputs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["annotate", str(inputs), "--engine", "ray", *arguments])
    assert result.exit_code == 2 and message in result.output


def test_an_unknown_engine_is_a_usage_error(inputs):
    result = runner.invoke(app, ["annotate", str(inputs), "--out", "x/", "--engine", "spark"])
    assert result.exit_code == 2 and "local, ray" in result.output
