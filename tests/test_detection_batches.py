"""R-Net and O-Net run on batches of powers of two, so a long video compiles a bounded number of
kernel shapes (the native memory growth of issue 12), on a CPU in chunks of at most `CPU_CHUNKS`
inputs (bigger batches were slower per face) with little padding, and the answers do not change."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fer_batch.detection import CPU_CHUNKS, GPU_CHUNK, BucketedBatches, FaceDetector
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
        calls: list[int] = []
        hook = padded.network.register_forward_pre_hook(lambda module, inputs: calls.append(inputs[0].shape[0]))
        try:
            for count in counts:
                calls.clear()
                crops = torch.rand((count, 3, side, side), generator=generator) * 2 - 1
                with torch.no_grad():
                    expected = [output.clone() for output in bare(crops)]
                    answers = padded(crops)
                assert [tuple(a.shape) for a in answers] == [tuple(e.shape) for e in expected]
                for answer, reference in zip(answers, expected):
                    assert torch.allclose(answer, reference, atol=1e-5)
                # each call a power of two of at most `chunk` inputs (a few shapes in all); padding
                # at most a quarter of a call (9 inputs run as 8 + 1, not as 16)
                assert all(size & (size - 1) == 0 and 1 <= size <= chunk for size in calls)
                assert 0 <= sum(calls) - count <= max(calls) // 4
        finally:
            hook.remove()
        assert padded.smallest == 1  # on a CPU a refinement call of one face runs at one, not eight


def test_a_cpu_detector_splits_a_stage_into_chunks_and_a_gpus_takes_it_in_padded_batches(detector: FaceDetector):
    """Small chunks are a CPU's remedy; on a GPU a stage of up to `GPU_CHUNK` candidates is one
    padded batch. On a CPU the last chunk runs at its own power of two (4 here), not 8, and 9
    inputs as 8 + 1."""
    assert (detector._rnet.chunk, detector._onet.chunk) == (CPU_CHUNKS["rnet"], CPU_CHUNKS["onet"]) == (32, 16)
    network = detector._onet.network
    whole = BucketedBatches(network, GPU_CHUNK)  # as a GPU detector wraps its O-Net
    shapes: list[int] = []
    hook = network.register_forward_pre_hook(lambda module, inputs: shapes.append(inputs[0].shape[0]))
    try:
        with torch.no_grad():
            whole(torch.zeros((100, 3, 48, 48)))
            detector._onet(torch.zeros((100, 3, 48, 48)))
            whole(torch.zeros((9, 3, 48, 48)))
            detector._onet(torch.zeros((9, 3, 48, 48)))
    finally:
        hook.remove()
    assert shapes == [128] + [16] * 6 + [4] + [16] + [8, 1]


class _RowSums(torch.nn.Module):
    """A stand-in network whose answers per row are easy to check; records each call's batch size."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(inputs.shape[0])
        return inputs.sum(dim=(1, 2, 3)), inputs.amax(dim=(1, 2, 3))


@given(count=st.integers(min_value=0, max_value=1200), chunk=st.sampled_from([None, 16, 32, 512]),
       smallest=st.sampled_from([1, 8]), split_padding=st.booleans())
def test_any_count_any_chunk_runs_in_power_of_two_calls_with_row_answers(count, chunk, smallest, split_padding):
    network = _RowSums()
    inputs = torch.arange(count * 12, dtype=torch.float32).reshape(count, 3, 2, 2)
    sums, maxima = BucketedBatches(network, chunk, smallest, split_padding)(inputs)
    assert torch.equal(sums, inputs.sum(dim=(1, 2, 3))) and torch.equal(maxima, inputs.amax(dim=(1, 2, 3)))
    assert network.calls and all(size & (size - 1) == 0 and size >= smallest for size in network.calls)
    assert chunk is None or max(network.calls) <= max(chunk, smallest)
    if count <= smallest or (chunk is None and not split_padding):  # one padded call
        assert network.calls == [bucket_size(count, smallest)]
    elif not split_padding:  # full chunks, then the rest padded whole (a GPU)
        whole, rest = divmod(count, chunk)
        assert network.calls == [chunk] * whole + ([bucket_size(rest, smallest)] if rest else [])
    else:  # at most a quarter of a call padded, or the rest of a smallest batch
        assert sum(network.calls) - count <= max(max(network.calls) // 4, smallest - 1)


def test_no_inputs_and_counts_under_the_smallest_batch_run_once(detector: FaceDetector):
    for padded, side in ((detector._rnet, 24), (detector._onet, 48)):
        with torch.no_grad():
            answers = padded(torch.zeros((0, 3, side, side)))
        assert answers and all(answer.shape[0] == 0 for answer in answers)
    network = detector._onet.network
    chunked_from_eight = BucketedBatches(network, chunk=16, smallest=8)
    shapes: list[int] = []
    hook = network.register_forward_pre_hook(lambda module, inputs: shapes.append(inputs[0].shape[0]))
    try:
        with torch.no_grad():
            answers = chunked_from_eight(torch.zeros((3, 3, 48, 48)))
    finally:
        hook.remove()
    assert shapes == [8] and all(answer.shape[0] == 3 for answer in answers)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector("cpu")
