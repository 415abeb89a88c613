"""Properties over generated inputs (hypothesis): the tracker, box mapping under --detect-scale,
and the writers' round trip through Parquet and CSV."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fer_batch.faces import Faces
from fer_batch.labels import EMOTIONS
from fer_batch.results import RunMetadata, read_table
from fer_batch.schema import ERROR_SCHEMA, annotation_schema
from fer_batch.tracking import IoUTracker
from fer_batch.writers import AnnotationWriter, write_table_atomic
from tests.test_tracking import _frame

# -- the tracker ---------------------------------------------------------------------------
corner = st.tuples(st.floats(0, 1200), st.floats(0, 640))


@given(st.lists(st.lists(corner, max_size=8), min_size=1, max_size=12))
def test_track_ids_are_unique_within_every_frame(frames):
    tracker = IoUTracker()
    for index, corners in enumerate(frames):
        ids = tracker.update(index, _frame(index, corners)).track_id.tolist()
        assert len(ids) == len(set(ids)) == len(corners)


@given(start=corner, step=st.tuples(st.floats(-6, 6), st.floats(-6, 6)), frames=st.integers(2, 30))
def test_a_face_moving_a_few_pixels_per_frame_keeps_its_id(start, step, frames):
    tracker = IoUTracker()
    ids = {
        int(tracker.update(index, _frame(index, [(start[0] + step[0] * index, start[1] + step[1] * index)])).track_id[0])
        for index in range(frames)
    }
    assert len(ids) == 1


@given(first=st.lists(corner, min_size=1, max_size=6, unique=True), second=st.lists(corner, max_size=6, unique=True),
       data=st.data())
def test_claimed_detections_get_their_tracks_and_the_rest_are_matched_by_overlap(first, second, data):
    """Whatever detections a frame has and whichever of them are claimed for whichever tracks: each
    claimed detection gets its track, no two detections share a track, `matched` changes nothing,
    and an unclaimed detection that alone overlaps one unclaimed track's prediction gets that track."""
    from fer_batch.tracking import box_iou

    tracker = IoUTracker()
    tracker.update(0, _frame(0, first))
    detections = _frame(1, second)
    rows = data.draw(st.lists(st.sampled_from(range(len(second))), unique=True, max_size=len(second))) if second else []
    tracks = data.draw(st.permutations(range(1, len(first) + 1)))[: len(rows)]
    claimed = dict(zip(rows, tracks))
    assert tracker.matched(1, detections).tolist() == tracker.matched(1, detections).tolist()
    faces = tracker.update(1, detections, claimed)
    track_of = {tuple(box): int(track) for box, track in zip(faces.boxes.tolist(), faces.track_id)}
    assert len(set(faces.track_id.tolist())) == len(second)
    for row, track in claimed.items():
        assert track_of[tuple(detections.boxes[row].tolist())] == track
    overlaps = box_iou(detections.boxes.astype(np.float64), _frame(0, first).boxes.astype(np.float64)) >= tracker.track_iou
    for row in set(range(len(second))) - set(claimed):
        candidates = np.flatnonzero(overlaps[row])
        if len(candidates) == 1 and overlaps[:, candidates[0]].sum() == 1 and candidates[0] + 1 not in claimed.values():
            assert track_of[tuple(detections.boxes[row].tolist())] == candidates[0] + 1


@given(max_missed=st.integers(0, 6), extra=st.integers(1, 4), start=corner)
def test_a_face_gone_longer_than_max_missed_gets_a_new_id(max_missed, extra, start):
    tracker = IoUTracker(max_missed=max_missed)
    first = int(tracker.update(0, _frame(0, [start])).track_id[0])
    gone = max_missed + extra  # frames without the face, more than max_missed
    for index in range(1, gone + 1):
        tracker.update(index, _frame(index, []))
    again = int(tracker.update(gone + 1, _frame(gone + 1, [start])).track_id[0])
    assert again != first


# -- box mapping under --detect-scale ---------------------------------------------------
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scale=st.floats(0.4, 1.6))
def test_boxes_and_landmarks_are_in_original_pixels_at_any_detect_scale(detector_and_photo, scale):
    """The six faces of the group photo, detected at another scale, land where they are at scale 1."""
    detector, frame, reference = detector_and_photo
    found = detector.detect([frame], detect_scale=scale, min_face_size=20)
    assert len(found) == len(reference) == 6
    order, reference_order = np.argsort(found.boxes[:, 0]), np.argsort(reference.boxes[:, 0])
    boxes, expected = found.boxes[order], reference.boxes[reference_order]
    heights = expected[:, 3] - expected[:, 1]
    assert np.all(np.abs(boxes - expected) < 0.2 * heights[:, None])
    assert np.all(np.abs(found.landmarks[order] - reference.landmarks[reference_order]) < 0.15 * heights[:, None, None])
    assert found.frame_width[0] == frame.rgb.shape[1] and found.frame_height[0] == frame.rgb.shape[0]


# -- writers ----------------------------------------------------------------------------
awkward = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=30)


@settings(max_examples=25, deadline=None)
@given(source=awkward, count=st.integers(0, 12), seed=st.integers(0, 2**16), csv=st.booleans())
@example(source="\r0", count=1, seed=0, csv=True)  # carriage returns: once written bare, they split rows
@example(source="0\r", count=1, seed=0, csv=True)
@example(source="\r", count=2, seed=0, csv=True)
@example(source="a\r\nb,\"c\"\n", count=3, seed=1, csv=True)
def test_any_rows_round_trip_through_parquet_and_csv(tmp_path_factory, source, count, seed, csv):
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(len(EMOTIONS)), count).astype(np.float32)
    faces = Faces.empty(source, "video").replace(
        frame_index=np.sort(rng.integers(0, 10**9, count)), timestamp_s=rng.random(count) * 1e5,
        boxes=rng.random((count, 4)).astype(np.float32) * 4000, landmarks=rng.random((count, 5, 2)).astype(np.float32),
        det_score=rng.random(count).astype(np.float32), detected=rng.random(count) < 0.5,
        frame_width=rng.integers(1, 10**5, count).astype(np.int32), frame_height=rng.integers(1, 10**5, count).astype(np.int32),
        track_id=rng.integers(1, 10**6, count).astype(np.int32), probabilities=probabilities,
    )
    out = tmp_path_factory.mktemp("roundtrip") / ("r.csv" if csv else "r.parquet")
    writer = AnnotationWriter(out, EMOTIONS)
    writer.write(faces)
    writer.commit(RunMetadata("test", "w", "", list(EMOTIONS), "cpu", {}))
    table = read_table(out, annotation_schema(EMOTIONS))
    assert len(table) == count
    if count:
        assert set(table.source) == {source}
        assert table.frame_index.tolist() == faces.frame_index.tolist()
        assert table.track_id.tolist() == faces.track_id.tolist()
        assert table.detected.tolist() == faces.detected.tolist()
        assert np.array_equal(table[["x1", "y1", "x2", "y2"]].to_numpy(), faces.boxes)
        assert np.array_equal(table[[f"prob_{name}" for name in EMOTIONS]].to_numpy(), probabilities)
        assert np.array_equal(table.timestamp_s.to_numpy(), faces.timestamp_s)


@settings(max_examples=25, deadline=None)
@given(sources=st.lists(awkward, min_size=1, max_size=4), message=awkward, suffix=st.sampled_from([".csv", ".parquet"]))
@example(sources=["clip\r.mp4"], message="cannot decode\r\nframe 3", suffix=".csv")
def test_the_errors_table_round_trips_any_names_and_messages(tmp_path_factory, sources, message, suffix):
    """The companion tables hold file names and error messages as users' files give them."""
    import pandas as pd

    frame = pd.DataFrame({"source": sources, "stage": ["decode"] * len(sources), "message": [message] * len(sources)})
    out = tmp_path_factory.mktemp("errors") / f"r.errors{suffix}"
    write_table_atomic(frame, out, ERROR_SCHEMA, RunMetadata("test", "w", "", list(EMOTIONS), "cpu", {}))
    table = read_table(out, ERROR_SCHEMA)
    assert table.to_dict("list") == frame.to_dict("list")


@pytest.fixture(scope="module")
def detector_and_photo(media_dir):
    from fer_batch.detection import FaceDetector
    from fer_batch.media import Frame, read_image

    detector = FaceDetector("cpu")
    frame = Frame(None, 0, 0.0, read_image(media_dir / "group-six-faces.jpg"))
    return detector, frame, detector.detect([frame], min_face_size=20)
