"""The IoU tracker on synthetic detections with known identities."""

from __future__ import annotations

import numpy as np

from fer_batch.detection import Detection
from fer_batch.tracking import IoUTracker, TrackerConfig, box_iou


def _face(x: float, y: float, size: float = 60.0) -> Detection:
    landmarks = np.array([[x + 18, y + 24], [x + 42, y + 24], [x + 30, y + 36], [x + 20, y + 46], [x + 40, y + 46]])
    return Detection((x, y, x + size, y + size), 0.99, landmarks.astype(np.float32))


def test_ids_stay_with_moving_faces_and_survive_misses():
    tracker = IoUTracker(TrackerConfig(iou_threshold=0.3, max_missed=3))
    ids_a, ids_b = set(), set()
    for frame in range(12):
        detections = [_face(100 + 8 * frame, 100)]  # person A walks right
        if frame not in (4, 5):  # person B is missed on two frames
            detections.append(_face(500, 300 - 5 * frame))
        faces = tracker.update(frame, detections)
        by_x = sorted(faces, key=lambda face: face.detection.box[0])
        ids_a.add(by_x[0].track_id)
        if len(by_x) > 1:
            ids_b.add(by_x[1].track_id)
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b


def test_new_person_gets_a_new_id_and_lost_tracks_expire():
    tracker = IoUTracker(TrackerConfig(iou_threshold=0.3, max_missed=1))
    first = tracker.update(0, [_face(100, 100)])[0].track_id
    tracker.update(1, [])
    tracker.update(2, [])  # missed twice: the track is gone
    again = tracker.update(3, [_face(100, 100)])[0].track_id
    newcomer = tracker.update(4, [_face(100, 100), _face(700, 100)])
    assert again != first
    assert {face.track_id for face in newcomer} == {again, again + 1}


def test_carry_forward_moves_boxes_with_their_velocity():
    tracker = IoUTracker()
    tracker.update(0, [_face(100, 100)])
    tracker.update(2, [_face(120, 100)])
    carried = tracker.carry_forward(3)
    assert len(carried) == 1 and not carried[0].detected
    assert carried[0].detection.box[0] > 120  # moved on in the direction of travel


def test_box_iou():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], dtype=float)
    overlaps = box_iou(boxes, boxes)
    assert overlaps[0, 0] == 1.0
    assert abs(overlaps[0, 1] - 50 / 150) < 1e-9
