"""fer_batch.mtcnn: MTCNN's stages with every resize of a stage in one call give facenet-pytorch's answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from facenet_pytorch.models.utils.detect_face import detect_face, imresample, pad
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.functional import interpolate

from fer_batch.detection import FaceDetector
from fer_batch.mtcnn import (
    AreaSampler, RowwisePReLU, StridedMaxPool, crop_box, detect_batch, for_cpu, summed_area_table, summed_area_table_opencv,
)

THRESHOLDS = [0.6, 0.7, 0.9]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector("cpu")


def _frames(seed: int, count: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), count=st.integers(1, 3), height=st.integers(1, 70), width=st.integers(1, 70))
def test_the_opencv_table_is_the_torch_table(seed, count, height, width):
    """The CPU's integral images equal the cumulative sums a GPU takes (and int64 those in int32)."""
    pixels = torch.from_numpy(_frames(seed, count, height, width))
    table = summed_area_table(pixels)
    assert torch.equal(summed_area_table_opencv(pixels), table)
    assert torch.equal(summed_area_table(pixels, torch.int64), table.long())
    assert table[:, -1, -1].tolist() == pixels.long().sum((1, 2)).tolist()


def test_a_threads_reused_table_buffer_holds_each_new_table():
    """Detection reuses one table buffer per thread (no fresh pages each window): a smaller window
    after a larger one gets its own exact table in the same memory, a larger one a grown buffer."""
    large, small, larger = (torch.from_numpy(_frames(seed, *shape)) for seed, shape in
                            ((1, (2, 60, 80)), (2, (3, 20, 30)), (3, (2, 90, 120))))
    first = summed_area_table_opencv(large, reuse=True)
    assert torch.equal(first, summed_area_table(large))
    second = summed_area_table_opencv(small, reuse=True)
    assert torch.equal(second, summed_area_table(small))
    assert second.data_ptr() == first.data_ptr()  # the same buffer: the first table is gone
    third = summed_area_table_opencv(larger, reuse=True)
    assert torch.equal(third, summed_area_table(larger))
    fresh = summed_area_table_opencv(small)  # without reuse: memory of its own
    assert fresh.data_ptr() != third.data_ptr() and torch.equal(fresh, summed_area_table(small))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), count=st.integers(1, 3), height=st.integers(12, 90), width=st.integers(12, 90),
       out_height=st.integers(1, 60), out_width=st.integers(1, 60))
def test_a_resize_is_area_interpolation(seed, count, height, width, out_height, out_width):
    """Both the summed-area path (small outputs) and the interpolate path give interpolate(mode="area")."""
    frames = _frames(seed, count, height, width)
    expected = interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(out_height, out_width), mode="area")
    actual = AreaSampler(torch.from_numpy(frames)).resize((out_height, out_width))
    assert actual.shape == expected.shape
    assert torch.allclose(actual, expected, rtol=0, atol=3e-5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), size=st.sampled_from([24, 48]),
       boxes=st.lists(st.tuples(st.floats(-40, 110), st.floats(-40, 90), st.floats(0.5, 120)), min_size=1, max_size=12))
def test_crops_are_facenets_crops_one_by_one(seed, size, boxes):
    """Candidates anywhere, partly or wholly outside the frame, smaller or larger than the crop:
    each crop is facenet-pytorch's pad + imresample of that box, and boxes with no pixel inside
    are flagged (facenet-pytorch skips them)."""
    frames = _frames(seed, 2, 80, 100)
    corners = torch.tensor([[x, y, x + side, y + side] for x, y, side in boxes], dtype=torch.float64)
    image_index = torch.tensor([row % 2 for row in range(len(boxes))])
    crops, outside = AreaSampler(torch.from_numpy(frames)).crops(corners, image_index, size)
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    top, bottom, left, right = pad(corners.clone(), 100, 80)
    for row in range(len(boxes)):
        inside = bottom[row] > top[row] - 1 and right[row] > left[row] - 1
        assert bool(outside[row]) == (not inside)
        single = crop_box(torch.from_numpy(frames[image_index[row]]), corners[row], size)  # refine's crops
        assert (single is None) == (not inside)
        if inside:
            region = images[image_index[row], :, top[row] - 1 : bottom[row], left[row] - 1 : right[row]].unsqueeze(0)
            assert torch.allclose(crops[row], imresample(region, (size, size))[0], rtol=0, atol=3e-5)
            assert torch.allclose(single, crops[row], rtol=0, atol=3e-5)


def _shared_frames(media_dir) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(media_dir / "walking-crowd-1080p.mp4"))
    frames = []
    for index in range(61):
        ok, bgr = capture.read()
        assert ok
        if index in (0, 60):
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def test_detections_equal_facenet_pytorch_on_real_frames(detector, media_dir):
    """Two 1080p crowd frames as one batch, and the group photo: the same faces, boxes, scores and
    landmarks as facenet-pytorch's detect_face with the same networks."""
    mtcnn = detector._mtcnn
    group = cv2.cvtColor(cv2.imread(str(media_dir / "group-six-faces.jpg")), cv2.COLOR_BGR2RGB)
    for batch in (np.stack(_shared_frames(media_dir)), group[None]):
        with torch.no_grad():
            expected_boxes, expected_points = detect_face(
                batch, 20, mtcnn.pnet, mtcnn.rnet, mtcnn.onet, THRESHOLDS, mtcnn.factor, torch.device("cpu")
            )
        boxes, points = detect_batch(batch, 20, detector._pnet, detector._rnet, detector._onet, THRESHOLDS,
                                     mtcnn.factor, torch.device("cpu"))
        assert len(boxes) == len(batch)
        for frame in range(len(batch)):
            expected = np.asarray(expected_boxes[frame], np.float64).reshape(-1, 5)
            assert len(expected) >= 3  # real faces, not an empty comparison
            order, expected_order = np.argsort(boxes[frame][:, 0]), np.argsort(expected[:, 0])
            np.testing.assert_allclose(boxes[frame][order, :4], expected[expected_order, :4], atol=0.01)
            np.testing.assert_allclose(boxes[frame][order, 4], expected[expected_order, 4], atol=1e-4)
            np.testing.assert_allclose(points[frame][order], np.asarray(expected_points[frame], np.float64)[expected_order], atol=0.01)


def test_frames_without_candidates_give_empty_answers(detector):
    """facenet-pytorch fails on these (`torch.cat(): expected a non-empty list`); here they are empty."""
    mtcnn = detector._mtcnn
    for frames in (np.full((2, 120, 160, 3), 128, np.uint8), np.zeros((1, 11, 30, 3), np.uint8)):
        boxes, points = detect_batch(frames, 20, detector._pnet, detector._rnet, detector._onet, THRESHOLDS,
                                     mtcnn.factor, torch.device("cpu"))
        assert len(boxes) == len(frames) and len(points) == len(frames)
        assert all(b.shape == (0, 5) for b in boxes) and all(p.shape == (0, 5, 2) for p in points)


def test_the_proposal_threshold_is_p_nets_threshold_as_in_facenet_pytorch(detector, media_dir):
    """`--proposal-threshold` is MTCNN's first-stage threshold: `FaceDetector.detect` at it finds
    facenet-pytorch's faces at thresholds [it, 0.7, 0.9] on two crowd frames (those of 20 px or
    more), and a strict one finds fewer faces than MTCNN's 0.6."""
    from fer_batch.media import Frame

    mtcnn = detector._mtcnn
    frames = _shared_frames(media_dir)
    found = {}
    for proposal in (0.6, 0.8, 0.95):
        faces = detector.detect([Frame(None, index, 0.0, rgb) for index, rgb in enumerate(frames)], threshold=0.9,
                                min_face_size=20, proposal_threshold=proposal)
        found[proposal] = len(faces)
        with torch.no_grad():
            expected_boxes, _ = detect_face(np.stack(frames), 20, mtcnn.pnet, mtcnn.rnet, mtcnn.onet, [proposal, 0.7, 0.9],
                                            mtcnn.factor, torch.device("cpu"))
        for index in range(len(frames)):
            expected = np.asarray(expected_boxes[index], np.float64).reshape(-1, 5)
            sizes = expected[:, 2:4] - expected[:, 0:2]
            expected = expected[(sizes >= 20).any(axis=1)]
            boxes = faces.boxes[faces.frame_index == index]
            assert len(boxes) == len(expected) >= 3
            np.testing.assert_allclose(boxes[np.argsort(boxes[:, 0])], expected[np.argsort(expected[:, 0]), :4], atol=0.01)
    assert found[0.95] < found[0.6]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 3), channels=st.integers(1, 12), height=st.integers(3, 40),
       width=st.integers(3, 40), kernel=st.integers(2, 3), stride=st.integers(1, 3))
def test_strided_max_pools_give_torchs_maxima_bit_for_bit(seed, batch, channels, height, width, kernel, stride):
    """Odd and even sizes, last windows hanging over the edge (ceil mode), ties from rounded values."""
    generator = torch.Generator().manual_seed(seed)
    maps = (torch.randn((batch, channels, height, width), generator=generator) * 4).round()
    maps = maps.contiguous(memory_format=torch.channels_last)
    pool = torch.nn.MaxPool2d(kernel, stride, ceil_mode=True)
    expected = pool(maps)
    answer = StridedMaxPool(pool, min_elements=0)(maps)
    assert answer.shape == expected.shape and torch.equal(answer, expected)
    assert answer.is_contiguous(memory_format=torch.channels_last)


def test_rowwise_prelus_give_torchs_values_bit_for_bit():
    """Channel counts that are and are not multiples of 8, maps of one row or column, and the
    inputs RowwisePReLU hands on: 2-d ones (R-Net's and O-Net's dense layers), NCHW maps."""
    generator = torch.Generator().manual_seed(5)
    for shape in ((1, 10, 37, 53), (3, 28, 22, 22), (2, 10, 1, 9), (2, 16, 7, 1), (5, 10), (1, 10, 6, 8)):
        prelu = torch.nn.PReLU(shape[1])
        with torch.no_grad():
            prelu.weight.copy_(torch.randn(shape[1], generator=generator))
        inputs = torch.randn(shape, generator=generator)
        if len(shape) == 4 and shape != (1, 10, 6, 8):  # the last stays NCHW: handed on
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            assert torch.equal(RowwisePReLU(prelu)(inputs), prelu(inputs))


def test_the_detectors_networks_are_cpu_copies_with_the_same_answers(detector):
    """facenet-pytorch's networks (the tests' reference) keep torch's modules; the detector's copies
    pool the strided way and take P-Net's ten-channel PReLU by rows, and P-Net answers the same on
    a real-sized pyramid level."""
    for ours, theirs in ((detector._pnet, detector._mtcnn.pnet), (detector._rnet.network, detector._mtcnn.rnet),
                         (detector._onet.network, detector._mtcnn.onet)):
        assert ours is not theirs
        pools = [module for module in ours.children() if isinstance(module, (StridedMaxPool, torch.nn.MaxPool2d))]
        assert pools and all(isinstance(module, StridedMaxPool) for module in pools)
        assert not any(isinstance(module, (StridedMaxPool, RowwisePReLU)) for module in theirs.children())
    assert isinstance(detector._pnet.prelu1, RowwisePReLU) and isinstance(detector._pnet.prelu2, torch.nn.PReLU)
    level = torch.rand((1, 3, 300, 500)).contiguous(memory_format=torch.channels_last) * 2 - 1
    with torch.no_grad():
        for answer, expected in zip(detector._pnet(level), detector._mtcnn.pnet(level)):
            assert torch.equal(answer, expected)
    with pytest.raises(ValueError):
        for_cpu(torch.nn.Sequential(torch.nn.MaxPool2d(2, 2, padding=1, ceil_mode=True)))
