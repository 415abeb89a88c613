"""The annotate pipeline's stages, each run alone on real inputs, and the `Faces` container."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from fer_batch.faces import Faces
from fer_batch.labels import EMOTIONS
from fer_batch.media import MediaSource, discover_sources
from fer_batch.options import RunOptions
from fer_batch.pipeline import (
    FrameBatch,
    SourceFinished,
    SourceStarted,
    classify_faces,
    crop_faces,
    detect_faces,
    read_frames,
    track_faces,
)
from fer_batch.schema import annotation_schema
from fer_batch.writers import AnnotationWriter, faces_to_record_batch
from tests.test_media import write_video


def _kinds(events) -> list[str]:
    return [type(event).__name__ for event in events]


def _faces(count: int, source: str = "a.mp4", classes: int = 7) -> Faces:
    rng = np.random.default_rng(count)
    corners = rng.uniform(0, 500, (count, 2)).astype(np.float32)
    probabilities = rng.dirichlet(np.ones(classes), count).astype(np.float32)
    return Faces.empty(source, "video").replace(
        frame_index=np.arange(count, dtype=np.int64),
        timestamp_s=np.arange(count) / 25.0,
        boxes=np.hstack([corners, corners + 40]).astype(np.float32),
        landmarks=rng.uniform(0, 500, (count, 5, 2)).astype(np.float32),
        det_score=rng.uniform(0.9, 1, count).astype(np.float32),
        detected=rng.uniform(size=count) > 0.3,
        frame_width=np.full(count, 640, np.int32),
        frame_height=np.full(count, 360, np.int32),
        track_id=rng.integers(1, 5, count).astype(np.int32),
        probabilities=probabilities,
    )


def test_faces_select_concat_and_replace_keep_columns_aligned():
    faces = _faces(6)
    picked = faces.select(np.array([4, 1]))
    assert picked.frame_index.tolist() == [4, 1] and np.array_equal(picked.boxes, faces.boxes[[4, 1]])
    joined = Faces.concat([faces.select(slice(0, 2)), faces.select(slice(2, 6))])
    for name in Faces.per_face_fields():
        value = getattr(faces, name)
        assert (value is None and getattr(joined, name) is None) or np.array_equal(getattr(joined, name), value)
    assert Faces.concat([faces, faces.replace(probabilities=None)]).probabilities is None  # unset in one: unset
    with pytest.raises(ValueError, match="track_id has 2 entries for 6 faces"):
        faces.replace(track_id=np.array([1, 2], np.int32))
    with pytest.raises(ValueError, match="one source"):
        Faces.concat([faces, _faces(2, source="b.mp4")])


def test_a_batch_becomes_arrow_rows_and_reads_back_exactly(tmp_path):
    from fer_batch.results import RunMetadata

    faces = _faces(5)
    batch = faces_to_record_batch(faces, EMOTIONS)
    assert batch.schema == annotation_schema(EMOTIONS)
    writer = AnnotationWriter(tmp_path / "faces.parquet", EMOTIONS)
    writer.write(faces)
    writer.write(faces.select(slice(0, 0)))  # an empty batch adds nothing
    writer.commit(RunMetadata("v", "w.pt", "0" * 64, list(EMOTIONS), "cpu", {}))
    table = pq.read_table(tmp_path / "faces.parquet").to_pandas()
    assert len(table) == 5 and (table.source == "a.mp4").all()
    assert np.array_equal(table[["x1", "y1", "x2", "y2"]].to_numpy(), faces.boxes)
    assert np.array_equal(table.lm_nose_y.to_numpy(), faces.landmarks[:, 2, 1])
    assert table.track_id.tolist() == faces.track_id.tolist() and table.detected.tolist() == faces.detected.tolist()
    assert table.emotion.tolist() == [EMOTIONS[i] for i in faces.probabilities.argmax(1)]
    assert np.array_equal(table.confidence.to_numpy(), faces.probabilities.max(1))


def test_read_frames_yields_each_source_in_order_and_keeps_frames_before_a_cut(tmp_path):
    write_video(tmp_path / "good.avi", frames=6, fourcc="MJPG")
    cut = write_video(tmp_path / "cut.avi", frames=30, fourcc="MJPG")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (tmp_path / "text.jpg").write_text("not an image")
    sources, _ = discover_sources([tmp_path])
    events = list(read_frames(sources, RunOptions(every_nth=2)))
    by_source: dict[str, list] = {}
    for event in events:
        by_source.setdefault(event.run.source.relative, []).append(event)
    assert list(by_source) == ["cut.avi", "good.avi", "text.jpg"]
    assert _kinds(by_source["good.avi"]) == ["SourceStarted", "FrameBatch", "FrameBatch", "FrameBatch", "SourceFinished"]
    assert [event.frames[0].index for event in by_source["good.avi"][1:-1]] == [0, 2, 4]
    cut_run = by_source["cut.avi"][0].run
    assert 0 < sum(isinstance(event, FrameBatch) for event in by_source["cut.avi"]) < 15
    assert [error.stage for error in cut_run.errors] == ["decode"] and "ended early" in cut_run.errors[0].message
    assert _kinds(by_source["text.jpg"]) == ["SourceStarted", "SourceFinished"]
    assert by_source["text.jpg"][0].run.errors[0].stage == "decode"


@pytest.fixture(scope="module")
def crowd_events(media_dir, annotator):
    """The first 6 crowd frames through read -> detect -> track, kept as a list."""
    source = MediaSource(media_dir / "walking-crowd-1080p.mp4", "crowd.mp4", "video")
    options = RunOptions(max_frames=6, detect_every=2, detect_batch=2)
    events = detect_faces(read_frames([source], options), annotator.detector, options)
    return options, list(track_faces(events, options, annotator.detector.refine))


def test_detect_groups_detector_frames_and_refinement_fills_the_frames_between(crowd_events):
    _, events = crowd_events
    batches = [event for event in events if isinstance(event, FrameBatch)]
    assert isinstance(events[0], SourceStarted) and isinstance(events[-1], SourceFinished)
    # detect_every 2, detect_batch 2: a window closes on its second detector frame (0, 2 | 4 and the rest).
    assert [[frame.index for frame in batch.frames] for batch in batches] == [[0, 1, 2], [3, 4, 5]]
    assert [batch.detect for batch in batches] == [[True, False, True], [False, True, False]]
    faces = Faces.concat([batch.faces for batch in batches])
    # Detections on keyframes only; between them every face is refined (on a keyframe, too, a face
    # the detector missed may be refined: test_a_face_the_keyframe_detector_misses_keeps_its_track_and_row).
    assert set(faces.frame_index[faces.detected]) == {0, 2, 4}
    assert not faces.detected[np.isin(faces.frame_index, [1, 3, 5])].any() and {1, 3, 5} <= set(faces.frame_index)
    for frame in range(6):  # on every frame, ids are unique and ordered
        ids = faces.track_id[faces.frame_index == frame]
        assert len(ids) >= 4 and list(ids) == sorted(set(ids))
    assert set(faces.track_id[~faces.detected]) <= set(faces.track_id[faces.detected])


def test_crop_cuts_aligned_crops_and_lets_frames_go(crowd_events, annotator):
    _, events = crowd_events
    cropped = [event for event in crop_faces(events, annotator.checkpoint.preprocessing) if isinstance(event, FrameBatch)]
    for batch in cropped:
        assert batch.frames == [] and batch.frame_count == 3
        assert batch.faces.crops.shape == (len(batch.faces), 48, 48) and batch.faces.crops.dtype == np.uint8
        assert batch.faces.crops.std(axis=(1, 2)).min() > 5  # real face pixels, not blank


def test_classify_gives_the_same_answers_whatever_the_batch_size(crowd_events, annotator):
    """GRU state follows each track across classifier batches, so batching must not change results."""
    _, events = crowd_events
    results = []
    for batch_size in (1, 7, 64):
        stream = classify_faces(crop_faces(events, annotator.checkpoint.preprocessing), annotator.classifiers(), batch_size)
        out = list(stream)
        assert isinstance(out[-1], SourceFinished)
        results.append(np.concatenate([event.faces.probabilities for event in out if isinstance(event, FrameBatch)]))
    assert np.allclose(results[0].sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(results[0], results[1], atol=1e-5) and np.allclose(results[0], results[2], atol=1e-5)


def test_a_stage_that_fails_on_one_source_records_it_and_the_run_goes_on(tmp_path, media_dir, annotator, monkeypatch):
    """The error policy lives in one place: a failure in any stage becomes an error row of that source."""
    import shutil

    from fer_batch.api import annotate

    for name in ("a.jpg", "b.jpg"):
        shutil.copy(media_dir / "group-six-faces.jpg", tmp_path / name)
    real_detect = annotator.detector.detect

    def failing_on_a(frames, source, media_type, **options):
        if source == "a.jpg":
            raise RuntimeError("detector exploded")
        return real_detect(frames, source, media_type, **options)

    monkeypatch.setattr(annotator.detector, "detect", failing_on_a)
    shutil.copy(media_dir / "group-six-faces.jpg", tmp_path / "c.jpg")
    import fer_batch.pipeline

    real_read = fer_batch.pipeline.read_image

    def reader_failing_on_c(path):  # not a MediaError: an exception nobody planned for
        if path.name == "c.jpg":
            raise MemoryError("cannot allocate")
        return real_read(path)

    monkeypatch.setattr(fer_batch.pipeline, "read_image", reader_failing_on_c)
    frame = annotate([tmp_path], annotator=annotator)
    errors, sources = frame.attrs["errors"], frame.attrs["sources"].set_index("source")
    assert errors.to_dict("records") == [
        {"source": "a.jpg", "stage": "detect", "message": "RuntimeError: detector exploded"},
        {"source": "c.jpg", "stage": "read", "message": "MemoryError: cannot allocate"},
    ]
    assert sources.status.to_dict() == {"a.jpg": "error", "b.jpg": "ok", "c.jpg": "error"}
    assert frame.groupby("source").size().to_dict() == {"b.jpg": 6}


def test_refinement_between_keyframes_keeps_ids_and_boxes_on_the_crowd(media_dir, annotator):
    """12 crowd frames with the detector on every 4th frame and O-Net refinement in between, against
    the detector on every frame: the same faces, the same boxes, one id per person. (The faces
    the every-frame detector found itself: a keyframe's weaker candidate that refinement confirms,
    found on more frames when every frame is a keyframe, is not what this compares.)"""
    from fer_batch.tracking import box_iou

    source = MediaSource(media_dir / "walking-crowd-1080p.mp4", "crowd.mp4", "video")

    def faces_of(detect_every: int) -> Faces:
        options = RunOptions(max_frames=12, detect_every=detect_every, small_faces_every=1)
        events = detect_faces(read_frames([source], options), annotator.detector, options)
        tracked = track_faces(events, options, annotator.detector.refine)
        return Faces.concat([event.faces for event in tracked if isinstance(event, FrameBatch)])

    every, refined = faces_of(1), faces_of(4)
    assert set(refined.frame_index[refined.detected]) == {0, 4, 8}
    matched, large, id_pairs = 0, 0, set()
    for frame in range(12):
        reference = every.select((every.frame_index == frame) & every.detected)
        ours = refined.select(refined.frame_index == frame)
        overlaps = box_iou(reference.boxes.astype(float), ours.boxes.astype(float))
        tall = reference.boxes[:, 3] - reference.boxes[:, 1] >= 40
        for row in np.flatnonzero(tall):
            large += 1
            if len(ours) and overlaps[row].max() >= 0.5:
                matched += 1
                id_pairs.add((int(reference.track_id[row]), int(ours.track_id[overlaps[row].argmax()])))
    assert large >= 40 and matched / large >= 0.95  # faces of 40 px and more are all still there
    # One refined track per reference track and back: no id switches, no re-issued ids.
    assert len({a for a, _ in id_pairs}) == len({b for _, b in id_pairs}) == len(id_pairs)


def _tracked(annotator, source: MediaSource, options: RunOptions, **track_options) -> Faces:
    """Detect and track `source` alone (the stages before the crops)."""
    events = detect_faces(read_frames([source], options), annotator.detector, options)
    tracked = track_faces(events, options, annotator.detector.refine, **track_options)
    return Faces.concat([event.faces for event in tracked if isinstance(event, FrameBatch)])


def _lossless_crowd_copy(media_dir, path, reorder) -> MediaSource:
    """The crowd clip's frames (BGR) passed through `reorder` (a slice, reversed, mirrored) and
    written to `path` as lossless FFV1, so the frames are the clip's own: a video source."""
    import cv2

    capture, frames = cv2.VideoCapture(str(media_dir / "walking-crowd-1080p.mp4")), []
    while (read := capture.read())[0]:
        frames.append(read[1])
    capture.release()
    frames = reorder(frames)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, frames[0].shape[1::-1])
    for bgr in frames:
        writer.write(np.ascontiguousarray(bgr))
    writer.release()
    return MediaSource(path, path.name, "video")


def _traced_rows(faces: Faces) -> dict[int, np.ndarray]:
    """Per track whose rows begin before its first detection: those earlier rows."""
    traced = {}
    for track in np.unique(faces.track_id):
        rows = np.flatnonzero(faces.track_id == track)
        detected = faces.frame_index[rows][faces.detected[rows]]
        if len(detected) and faces.frame_index[rows].min() < detected.min():
            traced[int(track)] = rows[faces.frame_index[rows] < detected.min()]
    return traced


def _detector_overlaps(annotator, source: MediaSource, faces: Faces, rows: np.ndarray) -> np.ndarray:
    """Per row, its box's best overlap (IoU) with the faces that the detector finds on its frame at
    the reference's threshold (0.7, the fer package's)."""
    from fer_batch.tracking import box_iou

    wanted = set(faces.frame_index[rows].tolist())
    frames = [frame for event in read_frames([source], RunOptions(max_frames=max(wanted) + 1))
              if isinstance(event, FrameBatch) for frame in event.frames if frame.index in wanted]
    found = annotator.detector.detect(frames, source.relative, "video", threshold=0.7)
    return np.array([
        box_iou(faces.boxes[row : row + 1].astype(float), found.boxes[found.frame_index == faces.frame_index[row]].astype(float)).max(initial=0)
        for row in rows
    ])


def test_a_face_a_keyframe_finds_is_followed_back_over_the_frames_before_it(media_dir, annotator):
    """The crowd's frames 0-19 (keyframes 0, 5, 10, 15): a person who walks in after frame 0 is
    first found at keyframe 5; the track starts there and is followed back to where O-Net first
    sees the face: rows before the keyframe, on a real face, scored at the trace threshold."""
    from fer_batch import defaults

    source = MediaSource(media_dir / "walking-crowd-1080p.mp4", "crowd.mp4", "video")
    faces = _tracked(annotator, source, RunOptions(max_frames=20, detect_every=5, detect_batch=4, small_faces_every=1))
    traced = _traced_rows(faces)
    assert traced, "no track followed back from its first keyframe"
    rows = np.concatenate(list(traced.values()))
    assert not faces.detected[rows].any() and (faces.det_score[rows] >= defaults.TRACE_THRESHOLD).all()
    assert (_detector_overlaps(annotator, source, faces, rows) >= 0.5).all()


def test_a_track_found_again_is_followed_back_over_the_frames_it_lost(tmp_path, media_dir, annotator):
    """The crowd clip played backwards at 640x360, its first 13 frames (keyframes 0, 5, 10): a
    38-px face detected on keyframe 5 is refined on frame 6, then lost (its refined box had grown
    off it), and detected again on keyframe 10, where its track takes it. The track is followed
    back from there over the frames it lost, as a new track is: rows on frames 7-9, refined, at
    the trace threshold, on the face the detector finds at the reference's threshold where it
    finds one (frames 8 and 9; frame 7 has no detection at 0.7, the row there is O-Net's 0.93)."""
    import cv2

    from fer_batch import defaults

    source = _lossless_crowd_copy(media_dir, tmp_path / "backwards-640.avi", lambda frames: [
        cv2.resize(bgr, (640, 360), interpolation=cv2.INTER_AREA) for bgr in frames[::-1][:13]])
    faces = _tracked(annotator, source, RunOptions(detect_every=5, detect_batch=2, small_faces_every=5))
    on_5 = np.flatnonzero((faces.frame_index == 5) & faces.detected & (np.abs(faces.boxes[:, 0] - 129) < 8))
    assert len(on_5) == 1
    track = faces.select(faces.track_id == faces.track_id[on_5[0]])
    assert track.frame_index.tolist() == list(range(5, 13)) and track.detected[track.frame_index == 10].all()
    lost = np.flatnonzero(np.isin(faces.frame_index, [7, 8, 9]) & (faces.track_id == faces.track_id[on_5[0]]))
    assert not faces.detected[lost].any() and (faces.det_score[lost] >= defaults.TRACE_THRESHOLD).all()
    assert (_detector_overlaps(annotator, source, faces, lost[1:]) >= 0.5).all()


def test_tracks_are_followed_back_into_the_batches_held_before_them(tmp_path, media_dir, annotator, monkeypatch):
    """The crowd clip played backwards (its frames 104-45; people walk away from the camera, so
    faces start small and are found late), one keyframe per detector window (windows of five
    frames): a track is followed back over several windows held for it, on real faces; held
    back nothing (trace_back_bytes 0), no track reaches past its own window.

    "On real faces": the traced rows of a track form one path (each box overlaps the next, IoU
    >= 0.5), and the detector at the reference's threshold has a face there on most of its frames
    (a 25-35 px face: the detector's own answer comes and goes, which is why tracks carry it)."""
    from fer_batch import defaults
    from fer_batch.tracking import box_iou

    source = _lossless_crowd_copy(media_dir, tmp_path / "backwards.avi", lambda frames: frames[:44:-1])
    options = RunOptions(detect_every=5, detect_batch=1, small_faces_every=1)
    # No candidates (their threshold at the detector's): every track then starts at a detection,
    # from which its rows followed back are counted.
    monkeypatch.setattr(defaults, "CANDIDATE_THRESHOLD", options.threshold)

    held, not_held = _tracked(annotator, source, options), _tracked(annotator, source, options, trace_back_bytes=0)
    reach = {track: int(held.frame_index[held.detected & (held.track_id == track)].min() - held.frame_index[rows].min())
             for track, rows in _traced_rows(held).items()}
    far = [track for track, frames_back in reach.items() if frames_back >= 2 * options.detect_every]
    assert far, f"no track followed back past the window before its first detection: {reach}"
    for track in far:
        rows = _traced_rows(held)[track]
        rows = rows[np.argsort(held.frame_index[rows])]
        assert (np.diff(held.frame_index[rows]) == 1).all()
        boxes = held.boxes[rows].astype(float)
        assert all(box_iou(boxes[index : index + 1], boxes[index + 1 : index + 2])[0, 0] >= 0.5 for index in range(len(rows) - 1))
        assert np.mean(_detector_overlaps(annotator, source, held, rows) >= 0.5) >= 0.5
    assert all(len(rows) < options.detect_every for rows in _traced_rows(not_held).values())
    assert len(held) > len(not_held)


def _assert_refined_rows_within_growth(faces: Faces) -> None:
    """No refined row of a track is larger than `MAX_REFINED_GROWTH` times the detection it was
    refined from (for rows followed back, the one after it), whatever O-Net scored it."""
    from fer_batch import defaults
    from fer_batch.tracking import box_sizes

    for track in np.unique(faces.track_id):
        rows = np.flatnonzero(faces.track_id == track)
        rows = rows[np.argsort(faces.frame_index[rows])]
        detected, sizes = faces.detected[rows], box_sizes(faces.boxes[rows])
        if not detected.any():  # started by a confirmed candidate: no detection to tell its rows followed back
            continue
        first_detected = int(np.flatnonzero(detected)[0])
        for row in np.flatnonzero(~detected):
            earlier, later = np.flatnonzero(detected[:row]), row + 1 + np.flatnonzero(detected[row + 1 :])
            anchor = later[0] if row < first_detected else earlier[-1]
            assert sizes[row] <= defaults.MAX_REFINED_GROWTH * sizes[anchor] + 1e-3, (track, faces.frame_index[rows[row]])


def test_a_refined_box_grown_past_the_tracks_last_detection_ends_the_track(media_dir, annotator, monkeypatch):
    """The crowd's frames 0-59, small faces searched on every other keyframe: a woman (x 866-934)
    turns away behind a passer-by from frame 33. O-Net's refined box grows on her hair and coat
    (scores 0.6-0.9) and, left alone, lands on the passer-by's face at 1.0 (frame 56: one track, two
    people). A refined box more than `MAX_REFINED_GROWTH` times the size of the track's last
    detection is not its face: her track ends within a few frames of turning away, and no row is
    larger than that against the detection it was refined from (for rows followed back, the one
    after it), whatever its score."""
    from fer_batch import defaults

    source = MediaSource(media_dir / "walking-crowd-1080p.mp4", "crowd.mp4", "video")
    options = RunOptions(max_frames=60, detect_every=5, detect_batch=2, small_faces_every=10)

    def woman_last_frame(faces: Faces) -> int:
        at_start = faces.select(faces.frame_index == 0)
        woman = at_start.track_id[(at_start.boxes[:, 0] > 850) & (at_start.boxes[:, 0] < 880)]
        assert len(woman) == 1
        return int(faces.frame_index[faces.track_id == woman[0]].max())

    faces = _tracked(annotator, source, options)
    assert woman_last_frame(faces) <= 40
    _assert_refined_rows_within_growth(faces)

    monkeypatch.setattr(defaults, "MAX_REFINED_GROWTH", float("inf"))
    assert woman_last_frame(_tracked(annotator, source, options)) >= 50  # without the bound: on to the passer-by


def test_a_face_the_detector_scores_under_the_threshold_is_confirmed_by_refinement(tmp_path, media_dir, annotator, monkeypatch):
    """The crowd clip mirrored, its frames 88-104: a 30-35 px face at x 552-589 (mirrored) that the
    detector scores under the threshold on the keyframes, and finds at the reference's 0.7. As a
    keyframe's candidate, refined as a tracked face is, it scores `CANDIDATE_CONFIRM` and starts a
    track (followed back from there); with no candidates (their threshold at the detector's), no
    track."""
    from fer_batch import defaults
    from fer_batch.tracking import box_iou

    source = _lossless_crowd_copy(media_dir, tmp_path / "mirrored.avi", lambda frames: [bgr[:, ::-1] for bgr in frames[88:]])
    options = RunOptions(detect_every=5, detect_batch=2, small_faces_every=5)
    face = np.array([[553.0, 709, 580, 742]])  # the face on frame 100 (mirrored frame 12 here), found at 0.7

    keyframe = next(frame for event in read_frames([source], RunOptions(max_frames=13)) if isinstance(event, FrameBatch)
                    for frame in event.frames if frame.index == 12)
    for threshold, found in ((0.7, True), (options.threshold, False)):
        detections = annotator.detector.detect([keyframe], threshold=threshold)
        assert (box_iou(face, detections.boxes.astype(float)).max(initial=0) >= 0.5) == found

    def rows_on_the_face(faces: Faces) -> np.ndarray:
        on_12 = np.flatnonzero(faces.frame_index == 12)
        return on_12[box_iou(face, faces.boxes[on_12].astype(float))[0] >= 0.5]

    faces = _tracked(annotator, source, options)
    rows = rows_on_the_face(faces)
    assert len(rows) == 1
    track = faces.select(faces.track_id == faces.track_id[rows[0]])
    assert not track.detected.any() and track.det_score.max() >= max(options.threshold, defaults.CANDIDATE_CONFIRM)
    assert (track.det_score >= defaults.TRACE_THRESHOLD).all() and len(track) >= 3

    monkeypatch.setattr(defaults, "CANDIDATE_THRESHOLD", options.threshold)
    assert not len(rows_on_the_face(_tracked(annotator, source, options)))


def test_a_face_the_keyframe_detector_misses_keeps_its_track_and_row(media_dir, annotator):
    """Crowd frame 15: the detector at the default threshold misses a 30-px face it finds at 0.7
    (and on the frames before). With the detector on every frame, the face's track still has a row
    there: refined by O-Net (`detected` False), on the face, under the track id of frame 14."""
    from fer_batch.tracking import box_iou

    source = MediaSource(media_dir / "walking-crowd-1080p.mp4", "crowd.mp4", "video")
    options = RunOptions(max_frames=16, detect_every=1)
    events = detect_faces(read_frames([source], options), annotator.detector, options)
    batches = [event for event in track_faces(events, options, annotator.detector.refine) if isinstance(event, FrameBatch)]
    faces = Faces.concat([batch.faces for batch in batches])
    frame_15 = next(frame for batch in batches for frame in batch.frames if frame.index == 15)
    lenient = annotator.detector.detect([frame_15], threshold=0.7)
    strict = annotator.detector.detect([frame_15], threshold=options.threshold)
    near = np.array([[1342.0, 679, 1366, 709]])
    truth = lenient.boxes[box_iou(near, lenient.boxes.astype(float)).argmax()][None].astype(float)
    assert box_iou(near, truth).max() >= 0.5  # the face is there (found at 0.7) ...
    assert not len(strict) or box_iou(truth, strict.boxes.astype(float)).max() < 0.5  # ... missed at 0.9
    on_15, on_14 = faces.select(faces.frame_index == 15), faces.select(faces.frame_index == 14)
    overlaps = box_iou(truth, on_15.boxes.astype(float))[0]
    assert overlaps.max() >= 0.5
    row = int(overlaps.argmax())
    assert not on_15.detected[row] and on_15.det_score[row] >= 0.5
    before = box_iou(on_15.boxes[row : row + 1].astype(float), on_14.boxes.astype(float))[0]
    assert on_14.track_id[before.argmax()] == on_15.track_id[row] and before.max() >= 0.5
    assert list(on_15.track_id) == sorted(set(on_15.track_id))  # one row per track, by track id


def test_a_track_refined_onto_a_detected_face_does_not_take_its_id(tmp_path, media_dir, annotator):
    """The crowd's first 36 frames at 640x360, the detector on every frame (all sizes): a face that fades out
    behind a neighbour (refined from frame 24 on, the detector no longer finds it) drifts toward
    the neighbour's face. Its refined box is dropped once it overlaps the neighbour's detection as
    a track match would, so the neighbour keeps one id on every frame (it was taken over at 33)."""
    import cv2

    video = tmp_path / "crowd-640.mp4"
    capture = cv2.VideoCapture(str(media_dir / "walking-crowd-1080p.mp4"))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 360))
    for _ in range(36):
        ok, frame = capture.read()
        assert ok
        writer.write(cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA))
    writer.release()
    options = RunOptions(detect_every=1, small_faces_every=1)  # the neighbour is under 30 px: detected on every frame
    events = detect_faces(read_frames([MediaSource(video, "crowd.mp4", "video")], options), annotator.detector, options)
    faces = Faces.concat([event.faces for event in track_faces(events, options, annotator.detector.refine)
                          if isinstance(event, FrameBatch)])
    assert (~faces.detected & (faces.frame_index >= 24)).any()  # the fading face was refined
    neighbour = faces.detected & (faces.frame_index >= 24) & (np.abs(faces.boxes[:, 0] - 328) < 8)
    assert neighbour.sum() >= 10 and len(set(faces.track_id[neighbour])) == 1


def test_a_track_back_from_a_gap_does_not_take_the_face_an_unbroken_track_follows(tmp_path, media_dir, annotator):
    """The crowd clip mirrored, its first 43 frames: from frame 26 a 59-px face is covered by a
    nearer person whose 90-px face has a track of its own. The first track's refined box drifts
    onto the nearer face, loses it for three frames, and comes back at 1.0 on the nearer face,
    where the nearer face's own track lands at 1.0 too. The track that followed its face without
    a break keeps it: one track on the nearer face on frames 20-42 (the two tracks took turns
    there, a row a frame each, on frames 33-39)."""
    from fer_batch.tracking import box_sizes

    source = _lossless_crowd_copy(media_dir, tmp_path / "mirrored.avi", lambda frames: [bgr[:, ::-1] for bgr in frames[:43]])
    faces = _tracked(annotator, source, RunOptions(detect_every=5, detect_batch=2, small_faces_every=5))
    near = ((faces.frame_index >= 20) & (faces.boxes[:, 0] > 820) & (faces.boxes[:, 0] < 900)
            & (box_sizes(faces.boxes.astype(float)) > 70))
    assert sorted(faces.frame_index[near].tolist()) == list(range(20, 43))  # a row on every frame, one a frame
    assert len(set(faces.track_id[near].tolist())) == 1
    # The covered face's refined box grew from its 50-px detection on frame 25 by 5-15 % a frame onto
    # the head of the person passing in front, at 0.97 and 0.98 on frames 26-27: those boxes do not set
    # its size, so its track ends at 1.4x (frame 28), not on that head (71 and 77 px on frames 28-29).
    covered = (faces.frame_index >= 20) & (faces.boxes[:, 0] > 760) & (faces.boxes[:, 0] < 820)
    assert faces.frame_index[covered].max() == 27
    _assert_refined_rows_within_growth(faces)


def test_a_face_that_moves_past_its_box_in_a_frame_keeps_one_track(tmp_path, media_dir, annotator, monkeypatch):
    """The crowd clip played backwards at 640x360 (frames 40 back to 25), the detector on every
    frame: a 29-px-wide face enters at frame 6 here and crosses 12-16 px a frame, so its detection
    overlaps the box it had the frame before under `track_iou`. Refined at that box, O-Net follows
    it onto its detection, which the track claims: one track over its eight frames. Without claims
    each of its first four frames started a track of its own."""
    import cv2

    from fer_batch import defaults

    source = _lossless_crowd_copy(media_dir, tmp_path / "backwards-640.avi", lambda frames: [
        cv2.resize(bgr, (640, 360), interpolation=cv2.INTER_AREA) for bgr in frames[40:24:-1]])
    options = RunOptions(detect_every=1, small_faces_every=1)

    def fast_face_tracks() -> list[int]:
        faces = _tracked(annotator, source, options)
        rows = np.flatnonzero(faces.boxes[:, 0] > 420)  # nobody else is in that part of the frame
        assert sorted(set(faces.frame_index[rows].tolist())) == list(range(6, 14))
        assert faces.detected[rows].all()
        return [int(track) for track in faces.track_id[rows[np.argsort(faces.frame_index[rows])]]]

    assert len(set(fast_face_tracks())) == 1
    monkeypatch.setattr(defaults, "CLAIM_IOU", 2.0)  # no refined box overlaps anything that much
    unclaimed = fast_face_tracks()
    assert len(set(unclaimed[:4])) == 4 and len(set(unclaimed)) == 4


class _ThreadRecordingDetector:
    """The real detector, noting the thread each call runs in and that thread's torch thread count."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.device = detector.device
        self.calls: list[tuple[str, int]] = []

    def detect(self, *args, **kwargs):
        import threading

        import torch

        self.calls.append((threading.current_thread().name, torch.get_num_threads()))
        return self.detector.detect(*args, **kwargs)


def test_windows_detected_side_by_side_give_the_faces_and_events_of_one_at_a_time(tmp_path, media_dir, annotator):
    """Two windows at once, each in its own thread on one torch thread (the CPU default on two
    cores), against one window at a time: the same events in the same order across a video, a
    file that cannot be read and a photo, and the same faces; boxes within float rounding (oneDNN
    sums in another order on another thread count), scores alike."""
    import torch

    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    sources = [MediaSource(media_dir / "walking-crowd-1080p.mp4", "crowd.mp4", "video"),
               MediaSource(bad, "bad.mp4", "video"),
               MediaSource(media_dir / "group-six-faces.jpg", "group.jpg", "image")]
    options = RunOptions(max_frames=7, detect_every=1, detect_batch=2)  # windows of 2 frames: several in flight
    threads_before = torch.get_num_threads()

    seen_threads = []  # torch threads of this thread, where the stages downstream run, at each event

    def run(workers: int) -> tuple[list, list[tuple[str, int]]]:
        detector = _ThreadRecordingDetector(annotator.detector)
        events = []
        for event in detect_faces(read_frames(sources, options), detector, options, workers, 1, threads=2):
            events.append(event)
            seen_threads.append((workers, torch.get_num_threads()))
        return events, detector.calls

    (serial, _), (parallel, calls) = run(1), run(2)

    def outline(events) -> list:
        return [(type(event).__name__, event.run.source.relative,
                 [frame.index for frame in event.frames] if isinstance(event, FrameBatch) else None) for event in events]

    assert outline(parallel) == outline(serial)
    assert [kind for kind, source, _ in outline(serial) if source == "bad.mp4"] == ["SourceStarted", "SourceFinished"]
    assert serial[outline(serial).index(("SourceStarted", "bad.mp4", None))].run.errors[0].stage == "decode"
    assert sum(kind == "FrameBatch" for kind, _, _ in outline(serial)) == 5  # 7 crowd frames in 4 windows, 1 photo
    faces = [(one.faces, other.faces) for one, other in zip(serial, parallel) if isinstance(one, FrameBatch)]
    assert sum(len(one) for one, _ in faces) >= 30
    for one, other in faces:
        assert one.frame_index.tolist() == other.frame_index.tolist()
        assert np.allclose(one.boxes, other.boxes, atol=1e-3) and np.allclose(one.landmarks, other.landmarks, atol=1e-3)
        assert np.allclose(one.det_score, other.det_score, atol=1e-5)
    assert len(calls) >= 5 and all(name.startswith("fer-detect") and threads == 1 for name, threads in calls)
    assert torch.get_num_threads() == threads_before  # the workers' setting stays in their threads
    # One window at a time leaves this thread's count alone; side by side, the stages downstream get
    # the cores the detectors leave: one while a window is still being detected (the third window
    # waits for the first, so at least once), two when none is.
    assert {threads for workers, threads in seen_threads if workers == 1} == {threads_before}
    parallel_threads = [threads for workers, threads in seen_threads if workers == 2]
    assert set(parallel_threads) <= {1, 2} and 1 in parallel_threads


@pytest.mark.parametrize(("frames", "options", "frame_range", "keyframes"), [
    (12, RunOptions(detect_every=5), None, [0, 5, 10, 11]),  # read to the end: the last frame too
    (10, RunOptions(detect_every=5), None, [0, 5, 9]),
    (11, RunOptions(detect_every=5), None, [0, 5, 10]),  # the last frame is a keyframe already
    (12, RunOptions(detect_every=5, max_frames=9), None, [0, 5]),  # cut by --max-frames: not the end
    (12, RunOptions(detect_every=5), (0, 9), [0, 5]),  # a Ray segment that stops before the end
    (12, RunOptions(detect_every=5), (5, None), [5, 10, 11]),  # the last segment reads to the end
])
def test_a_video_read_to_its_end_has_its_last_frame_detected(tmp_path, annotator, frames, options, frame_range, keyframes):
    """A face that walks in after the last regular keyframe is found on the last frame (and the
    early track starts carry it back); a video cut short by --max-frames or a segment is not at
    its end, so the Ray engine's segments detect on the frames the local engine does."""
    video = write_video(tmp_path / "clip.mp4", frames)
    events = detect_faces(read_frames([MediaSource(video, "clip.mp4", "video")], options, frame_range),
                          annotator.detector, options)
    detected = [frame.index for event in events if isinstance(event, FrameBatch)
                for frame, flag in zip(event.frames, event.detect) if flag]
    assert detected == keyframes


@pytest.mark.parametrize(("options", "small_face_frames"), [
    (RunOptions(detect_every=1), [0, 5, 10, 11]),  # every 5th frame, and the last
    (RunOptions(detect_every=1, small_faces_every=1), list(range(12))),
    (RunOptions(), [0, 5, 10, 11]),  # the CPU defaults: every keyframe (every 5th frame), and the last
    (RunOptions(detect_every=2, small_faces_every=5), [0, 6, 11]),  # every 3rd keyframe: 5 frames rounded up
    (RunOptions(detect_every=5, small_faces_every=5), [0, 5, 10, 11]),  # every keyframe
])
def test_small_faces_are_searched_for_on_every_kth_frame_and_the_last(tmp_path, annotator, options, small_face_frames):
    video = write_video(tmp_path / "clip.mp4", 12)
    events = detect_faces(read_frames([MediaSource(video, "clip.mp4", "video")], options), annotator.detector, options)
    batches = [event for event in events if isinstance(event, FrameBatch)]
    flags = [(frame.index, detect, small) for batch in batches
             for frame, detect, small in zip(batch.frames, batch.detect, batch.small_faces)]
    assert [index for index, _, small in flags if small] == small_face_frames
    assert all(detect for _, detect, small in flags if small)


def test_a_small_face_is_found_on_a_small_face_frame_and_followed_between_them(media_dir, annotator):
    """The crowd's first 11 frames, the detector on every frame: faces under 30 px are searched for
    on frames 0, 5 and 10 only, so on the frames between the detector reports none. A face of about 30 px at
    (1328, 661), 29 px on frame 5, still has one track with a row on every frame from 1 to 10:
    detected where it measures 30 px or more, refined by O-Net where the detector leaves it out."""
    source = MediaSource(media_dir / "walking-crowd-1080p.mp4", "crowd.mp4", "video")
    options = RunOptions(max_frames=11, detect_every=1)
    assert options.small_face_size == 30
    events = detect_faces(read_frames([source], options), annotator.detector, options)
    batches = [event for event in track_faces(events, options, annotator.detector.refine) if isinstance(event, FrameBatch)]
    faces = Faces.concat([batch.faces for batch in batches])
    sides = np.maximum(faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1])
    between = ~np.isin(faces.frame_index, [0, 5, 10])
    assert not (faces.detected & between & (sides < options.small_face_size)).any()
    small = np.flatnonzero(faces.detected & (faces.frame_index == 5) & (sides < options.small_face_size))
    assert len(small) == 1 and abs(faces.boxes[small[0], 0] - 1328) < 3  # the face at (1328, 661)
    rows = faces.track_id == faces.track_id[small[0]]
    assert sorted(faces.frame_index[rows]) == list(range(1, 11))
    assert (~faces.detected[rows & between]).sum() >= 2  # refined on frames the detector left it out


def test_refinement_searches_around_a_small_face_that_onet_scores_low(media_dir, annotator):
    """A 26-px face of the crowd clip, found at keyframe 15: without the search (O-Net at the box
    and again at its own answer) it scores under the refinement threshold on a later frame (the
    track would be dropped); the search around the box keeps it on every frame, on the face the
    detector finds there."""
    import cv2

    from fer_batch.media import Frame
    from fer_batch.tracking import box_iou

    capture = cv2.VideoCapture(str(media_dir / "walking-crowd-1080p.mp4"))
    frames = []
    for index in range(21):
        ok, bgr = capture.read()
        assert ok
        frames.append(Frame(None, index, index / 25, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    capture.release()
    detector = annotator.detector
    keyframe = detector.detect([frames[15]], threshold=0.7)
    start = keyframe.boxes[box_iou(np.array([[1345.0, 684, 1371, 717]]), keyframe.boxes.astype(float)).argmax()][None]
    assert start[0, 3] - start[0, 1] < 40

    def follow(search_below: float) -> tuple[list[float], list[float]]:
        box, scores, overlaps = start.astype(float), [], []
        for frame in frames[16:]:
            found = detector.refine(frame, box, search_below=search_below)
            plain = detector.refine(frame, box, search_below=0.0)
            assert found.det_score[0] >= plain.det_score[0]  # the search never does worse than the box itself
            full = detector.detect([frame], threshold=0.7)
            overlaps.append(float(box_iou(found.boxes.astype(float), full.boxes.astype(float)).max()))
            scores.append(float(found.det_score[0]))
            box = found.boxes.astype(float)
        return scores, overlaps

    assert min(follow(search_below=0.0)[0]) < 0.5  # no search: the face is lost
    scores, overlaps = follow(search_below=0.9)
    assert min(scores) >= 0.8 and min(overlaps) >= 0.5


def test_refinement_crops_all_boxes_at_once_as_it_crops_them_one_by_one(media_dir, annotator, monkeypatch):
    """On a GPU refinement crops a frame's boxes in one lookup through a summed-area table, on a
    CPU one by one: run both here on a crowd frame's faces, shifted and resized copies of them, a
    box across the frame's edge and one wholly outside it; the refined faces are the same."""
    import cv2

    from fer_batch.media import Frame

    capture = cv2.VideoCapture(str(media_dir / "walking-crowd-1080p.mp4"))
    ok, bgr = capture.read()
    capture.release()
    assert ok
    frame = Frame(None, 0, 0.0, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    detector = annotator.detector
    detected = detector.detect([frame]).boxes.astype(np.float64)
    assert len(detected) >= 5
    sizes = detected[:, 2:] - detected[:, :2]
    boxes = np.concatenate([
        detected,
        detected + np.tile(sizes * 0.15, 2),  # off the face: the weak boxes' eight-shift search runs
        detected[:, [0, 1, 0, 1]] + np.tile(sizes, 2) * [0.1, 0.1, 0.7, 0.7],  # part of each face
        [[-30.0, 500, 40, 570], [1900, 1000, 1990, 1090], [-200.0, -200, -100, -100]],
    ])
    one_by_one = detector.refine(frame, boxes)
    monkeypatch.setattr(detector, "batched_crops", True)
    all_at_once = detector.refine(frame, boxes)
    assert len(all_at_once) == len(one_by_one) == len(boxes)
    assert np.allclose(all_at_once.det_score, one_by_one.det_score, atol=1e-3)
    assert np.allclose(all_at_once.boxes, one_by_one.boxes, atol=0.05)
    assert np.allclose(all_at_once.landmarks, one_by_one.landmarks, atol=0.05)
    assert one_by_one.det_score[-1] == 0.0 and (one_by_one.det_score[:len(detected)] >= 0.9).all()
    assert (detector.refine(frame, boxes, search_below=0.0).det_score < all_at_once.det_score).any()  # a search ran
