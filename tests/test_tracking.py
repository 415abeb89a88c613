"""The IoU tracker on synthetic detections with known identities."""

from __future__ import annotations

import numpy as np
import pytest

from fer_batch.faces import Faces
from fer_batch.tracking import IoUTracker, box_iou, box_sizes


def _frame(frame_index: int, corners: list[tuple[float, float]], size: float = 60.0) -> Faces:
    """Detections of one frame: square faces with their top-left corners at `corners`."""
    boxes = np.array([(x, y, x + size, y + size) for x, y in corners], np.float32).reshape(-1, 4)
    offsets = np.array([[18, 24], [42, 24], [30, 36], [20, 46], [40, 46]], np.float32)
    count = len(corners)
    return Faces.empty("clip.mp4", "video").replace(
        frame_index=np.full(count, frame_index, np.int64),
        timestamp_s=np.full(count, frame_index / 25, np.float64),
        boxes=boxes,
        landmarks=boxes[:, None, :2] + offsets[None],
        det_score=np.full(count, 0.99, np.float32),
        detected=np.ones(count, bool),
        frame_width=np.full(count, 1280, np.int32),
        frame_height=np.full(count, 720, np.int32),
    )


def test_ids_stay_with_moving_faces_and_survive_misses():
    tracker = IoUTracker(track_iou=0.3, max_missed=3)
    ids_a, ids_b = set(), set()
    for frame in range(12):
        corners = [(100 + 8 * frame, 100)]  # person A walks right
        if frame not in (4, 5):  # person B is missed on two frames
            corners.append((500, 300 - 5 * frame))
        faces = tracker.update(frame, _frame(frame, corners))
        by_x = faces.select(np.argsort(faces.boxes[:, 0]))
        ids_a.add(int(by_x.track_id[0]))
        if len(by_x) > 1:
            ids_b.add(int(by_x.track_id[1]))
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b


def test_new_person_gets_a_new_id_and_lost_tracks_expire():
    tracker = IoUTracker(track_iou=0.3, max_missed=1)
    first = int(tracker.update(0, _frame(0, [(100, 100)])).track_id[0])
    tracker.update(1, _frame(1, []))
    tracker.update(2, _frame(2, []))  # missed twice: the track is gone
    again = int(tracker.update(3, _frame(3, [(100, 100)])).track_id[0])
    newcomer = tracker.update(4, _frame(4, [(100, 100), (700, 100)]))
    assert again != first
    assert set(newcomer.track_id.tolist()) == {again, again + 1}


def test_update_returns_faces_ordered_by_track_id_with_their_own_boxes():
    tracker = IoUTracker()
    tracker.update(0, _frame(0, [(100, 100), (400, 100)]))
    # The same two people, listed right to left: ids follow the boxes, rows come back by id.
    faces = tracker.update(1, _frame(1, [(404, 100), (104, 100)]))
    assert faces.track_id.tolist() == [1, 2]
    assert faces.boxes[:, 0].tolist() == [104, 404]
    assert np.allclose(faces.landmarks[:, 0] - faces.boxes[:, None, :2][:, 0], [18, 24])


def test_predictions_follow_velocity_and_refined_rounds_keep_ids():
    tracker = IoUTracker(max_missed=1)
    tracker.update(0, _frame(0, [(100, 100), (400, 100)]))
    tracker.update(2, _frame(2, [(120, 100), (400, 100)]))
    ids, predicted = tracker.predictions(3)
    assert ids.tolist() == [1, 2] and predicted[0, 0] > 120 and predicted[1, 0] == 400  # moved on with its velocity
    # A refined round: each face names its track; two landed on one person, the more confident stays.
    refined = _frame(3, [(131, 100), (132, 101), (400, 100)]).replace(
        track_id=np.array([1, 2, 2], np.int32), det_score=np.array([0.99, 0.95, 0.98], np.float32))
    kept = tracker.update_tracks(3, refined)
    assert kept.track_id.tolist() == [1, 2] and kept.boxes[:, 0].tolist() == [131, 400]
    # Track 2 is refined away (missing) twice: with max_missed 1 it is gone, track 1 lives on.
    tracker.update_tracks(4, _frame(4, [(140, 100)]).replace(track_id=np.array([1], np.int32)))
    tracker.update_tracks(5, _frame(5, [(150, 100)]).replace(track_id=np.array([1], np.int32)))
    assert tracker.predictions(6)[0].tolist() == [1]


def test_a_track_the_keyframe_detector_missed_is_recovered_and_its_miss_forgiven():
    """Keyframe 1 detects A but not B: only B is offered to refinement (`only_missing`); B's refined
    face moves B on, and B's miss of that round is forgiven; a second face landing on A's person
    is dropped for the more confident one."""
    tracker = IoUTracker(track_iou=0.3, max_missed=1)  # a second miss in a row ends a track
    tracker.update(0, _frame(0, [(100, 100), (400, 100)]))  # A = 1, B = 2
    tracker.update(1, _frame(1, [(104, 100)]))  # B missed by the detector
    ids, predicted = tracker.predictions(1, only_missing=True)
    assert ids.tolist() == [2] and np.allclose(predicted, [[400, 100, 460, 160]])
    refound = _frame(1, [(403, 101), (405, 103)]).replace(
        track_id=np.array([2, 2], np.int32), det_score=np.array([0.7, 0.6], np.float32), detected=np.zeros(2, bool)
    )
    kept = tracker.recover(1, refound)
    assert kept.track_id.tolist() == [2] and kept.boxes[0, 0] == 403  # the more confident of the two
    tracker.update(2, _frame(2, [(108, 100)]))  # B's first miss in a row now (frame 1's was forgiven)
    assert tracker.predictions(3)[0].tolist() == [1, 2]
    tracker.update(3, _frame(3, [(112, 100)]))  # and its second: B ends
    assert tracker.predictions(4)[0].tolist() == [1]


def test_a_claimed_detection_goes_to_its_track_before_overlaps_are_matched():
    """A face that moved more than its box's width in a frame overlaps no prediction: `matched` says
    it would start a track (and changes nothing); claimed for its track, it moves that track, and
    the other detections are matched by overlap as before."""
    tracker = IoUTracker(track_iou=0.3)
    first = tracker.update(0, _frame(0, [(100, 100), (400, 100)]))
    moved = _frame(1, [(170, 100), (402, 100)])  # the first face moved 70 px, past its 60 px box
    assert tracker.matched(1, moved).tolist() == [0, 2]
    assert tracker.matched(1, moved).tolist() == [0, 2]  # a dry run: the tracker is unchanged
    faces = tracker.update(1, moved, claimed={0: 1})
    assert faces.track_id.tolist() == [1, 2] and tracker.next_id == 3
    assert faces.boxes[0, 0] == 170 and first.track_id.tolist() == [1, 2]
    unclaimed = IoUTracker(track_iou=0.3)
    unclaimed.update(0, _frame(0, [(100, 100), (400, 100)]))
    assert sorted(unclaimed.update(1, moved).track_id.tolist()) == [2, 3]  # without the claim, a new track


def test_a_track_is_unbroken_when_it_had_its_face_on_the_annotated_frame_before():
    """The tracker is the one record of "the annotated frame before": before a round on a frame has
    begun and after (a keyframe's refinement reads it before `update`, the tie-break after), with
    frames skipped between annotated frames (sampling), and anew for the ids it names."""
    tracker = IoUTracker(max_missed=3)
    assert tracker.round_before(0) is None
    tracker.update(0, _frame(0, [(100, 100), (400, 100)]))
    assert tracker.round_before(0) is None and tracker.round_before(4) == 0
    tracker.update(4, _frame(4, [(100, 100)]))  # the second face is missed on frame 4
    assert tracker.round_before(8) == 4 and tracker.round_before(4) == 0
    assert tracker.live_ids().tolist() == [1, 2]
    assert tracker.unbroken(np.array([1, 2]), 8).tolist() == [True, False]
    tracker.update(8, _frame(8, [(400, 100)]))  # now the first face is missed, the second is back
    # during frame 8's round (a keyframe's `recover` comes after its `update`): frame 4 is the one before
    assert tracker.unbroken(np.array([1]), 8).tolist() == [True]
    assert tracker.unbroken(np.array([2, 1]), 12).tolist() == [True, False]


def test_a_prediction_moves_the_box_and_keeps_its_size():
    """A face moving right while its boxes grow: the prediction moves the centre on at the track's
    velocity but keeps the last size (extrapolated, refinement's size noise grew boxes until O-Net
    lost a 30-px crowd face)."""
    tracker = IoUTracker()
    tracker.update(0, _frame(0, [(100, 100)], size=60))
    tracker.update(1, _frame(1, [(106, 100)], size=64))  # centre moves by (8, 2), size by 4
    _, predicted = tracker.predictions(3)
    box = predicted[0]
    assert box[2] - box[0] == pytest.approx(64) and box[3] - box[1] == pytest.approx(64)
    centre = (box[:2] + box[2:]) / 2
    # velocity after one match: half the per-frame change (the average with the zero start)
    assert centre == pytest.approx(np.array([138.0, 132.0]) + 2 * np.array([4.0, 1.0]))


def test_a_track_remembers_the_size_of_its_last_detection():
    """The size refined boxes are held to (`defaults.MAX_REFINED_GROWTH`): a detection sets it; a
    refined face moves the track but leaves it, however high it scores (O-Net scores a box drifting
    onto a bowed head 0.97-0.98)."""
    tracker = IoUTracker()
    tracker.update(0, _frame(0, [(100, 100)], size=60))
    assert tracker.detected_sizes(np.array([1])).tolist() == [60.0]
    refined = _frame(1, [(100, 100)], size=90).replace(
        track_id=np.array([1], np.int32), detected=np.zeros(1, bool), det_score=np.array([0.8], np.float32))
    tracker.update_tracks(1, refined)
    tracker.recover(2, refined.replace(frame_index=np.array([2])))
    assert tracker.detected_sizes(np.array([1])).tolist() == [60.0]
    sure = refined.replace(frame_index=np.array([3]), det_score=np.array([1.0], np.float32))
    moved = tracker.update_tracks(3, sure)
    assert moved.boxes[0, 2] - moved.boxes[0, 0] == 90  # the track moved to it
    assert tracker.detected_sizes(np.array([1])).tolist() == [60.0]
    tracker.update(4, _frame(4, [(102, 100)], size=80))
    assert tracker.detected_sizes(np.array([1])).tolist() == [80.0]


def test_box_sizes_are_the_square_root_of_the_area():
    boxes = np.array([[0, 0, 40, 90], [10, 10, 10, 30], [5, 5, 3, 9]], np.float32)
    assert box_sizes(boxes).tolist() == [60.0, 0.0, 0.0]


def test_box_iou():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], dtype=float)
    overlaps = box_iou(boxes, boxes)
    assert overlaps[0, 0] == 1.0
    assert abs(overlaps[0, 1] - 50 / 150) < 1e-9
