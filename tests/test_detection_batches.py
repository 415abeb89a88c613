"""R-Net and O-Net run on batches padded to powers of two, so a long video compiles a bounded
number of kernel shapes (the native memory growth of issue 12), on a CPU in chunks of at most
`CPU_CHUNKS` inputs (bigger batches were slower per face), and the answers do not change."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fer_batch.detection import CPU_CHUNKS, BucketedBatches, FaceDetector
from fer_batch.runtime import bucket_size


@given(st.integers(min_value=1, max_value=5000))
def test_bucket_sizes_are_few_powers_of_two_that_fit(count):
    size = bucket_size(count)
    assert size >= count and size >= 8 and size & (size - 1) == 0
    assert size < 2 * max(count, 8)


@settings(max_examples=25, deadline=None)
@given(counts=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=6), seed=st.integers(0, 2**16))
def test_padded_networks_answer_like_the_bare_ones_at_few_shapes(detector: FaceDetector, counts, seed):
    generator = torch.Generator().manual_seed(seed)
    for bare, padded, side, chunk in ((detector._mtcnn.rnet, detector._rnet, 24, CPU_CHUNKS["rnet"]),
                                      (detector._mtcnn.onet, detector._onet, 48, CPU_CHUNKS["onet"])):
        # `bare` is facenet-pytorch's network as it ships; `padded` wraps the detector's copy of it
        # (channels-last, strided max-pools, rowwise PReLUs: fer_batch.mtcnn.for_cpu)
        assert padded.network is not bare
        shapes: set[int] = set()
        hook = padded.network.register_forward_pre_hook(lambda module, inputs: shapes.add(inputs[0].shape[0]))
        try:
            for count in counts:
                crops = torch.rand((count, 3, side, side), generator=generator) * 2 - 1
                with torch.no_grad():
                    expected = [output.clone() for output in bare(crops)]
                    answers = padded(crops)
                assert [tuple(a.shape) for a in answers] == [tuple(e.shape) for e in expected]
                for answer, reference in zip(answers, expected):
                    assert torch.allclose(answer, reference, atol=1e-5)
        finally:
            hook.remove()
        # each call at most `chunk` inputs: whole chunks, and the rest padded to its power of two
        assert padded.smallest == 1  # on a CPU a refinement call of one face runs at one, not eight
        assert shapes <= {bucket_size(count % chunk or chunk, 1) for count in counts} | {chunk}
        assert all(size & (size - 1) == 0 and 1 <= size <= chunk for size in shapes)


def test_a_cpu_detector_splits_a_stage_into_chunks_and_an_unchunked_network_takes_it_whole(detector: FaceDetector):
    """Small chunks are a CPU's remedy; on a GPU (chunk None) a stage stays one batch. A CPU's
    last chunk is padded only to its own power of two (4 here), not to 8."""
    assert (detector._rnet.chunk, detector._onet.chunk) == (CPU_CHUNKS["rnet"], CPU_CHUNKS["onet"]) == (32, 16)
    network = detector._onet.network
    whole = BucketedBatches(network, chunk=None)
    shapes: list[int] = []
    hook = network.register_forward_pre_hook(lambda module, inputs: shapes.append(inputs[0].shape[0]))
    try:
        with torch.no_grad():
            whole(torch.zeros((100, 3, 48, 48)))
            detector._onet(torch.zeros((100, 3, 48, 48)))
    finally:
        hook.remove()
    assert shapes == [128] + [16] * 6 + [4]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector("cpu")
