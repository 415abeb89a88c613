"""MTCNN's three stages over a batch of frames, every resize of a stage done in one call.

facenet-pytorch's `detect_face` (whose networks, box arithmetic and thresholds this
follows step by step) shrinks frames and crops candidates with `interpolate(mode="area")`,
one call per R-Net and O-Net candidate in a Python loop: about 750 calls on a 1080p crowd
frame, a fifth of detection time on a CPU and the reason a GPU waits on Python.

Area interpolation is an average over a rectangle of whole pixels for each output
pixel (`adaptive_avg_pool2d`'s cells). With a summed-area table (integral image) of each
frame in integers, any such average is four lookups, so the whole pyramid level, and all
candidates of a stage, are each one indexing operation, on whatever device the frames are.
The integer sums are exact and there is one division per value, so the crops and pyramid
levels equal facenet-pytorch's to float rounding (within 3e-5 on a 0-255 scale), and so do
the boxes, scores and landmarks (`tests/test_mtcnn.py`).

Also: the table's corners are gathered as rows of the flattened table (2x faster than
indexing the 4-d table), on a CPU by numpy's `take` (1.2x `index_select` on the pyramid), and
each thread reuses one table buffer; P-Net runs on channels-last inputs, one frame at a time on
a CPU (1.8x and 1.7x faster at 1080p: oneDNN's faster layout, and one frame's maps fit the
caches); R-Net and O-Net run channels-last too and batch their own inputs: each stage's
candidates are handed to them whole (`fer_batch.detection.BucketedBatches` splits them: into
16-32 on a CPU, where bigger batches' activations are page-faulted in anew on every call, and
into 512 on a GPU); on a CPU large max-pools are maxima of strided views (`StridedMaxPool`) and
P-Net's first PReLU runs over whole rows (`RowwisePReLU`); and a batch with no candidates
returns empty results where facenet-pytorch fails.
"""

from __future__ import annotations

import copy
import threading

import cv2
import numpy as np
import torch
from torch.nn.functional import interpolate
from torchvision.ops import batched_nms

PNET_CELL = 12  # P-Net's window, in pyramid pixels: the smallest face a pyramid level can find


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """The scales at which P-Net's 12-pixel window covers faces from `min_face_size` up to the frame."""
    scale = PNET_CELL / min_face_size
    shortest = min(height, width) * scale
    scales = []
    while shortest >= PNET_CELL:
        scales.append(scale)
        scale *= factor
        shortest *= factor
    return scales


def summed_area_table(pixels: torch.Tensor, dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """(B, H + 1, W + 1, C) sums of uint8 (B, H, W, C) frames over [0, y) x [0, x), on their device.

    Frame by frame: the cumulative sums' temporaries are then one frame's, not the batch's (for a
    GPU's window of 32 1080p frames, the whole batch's came to three more tables, 2.4 GB by
    arithmetic, and at 4K four times that)."""
    batch, height, width, channels = pixels.shape
    table = torch.zeros((batch, height + 1, width + 1, channels), dtype=dtype, device=pixels.device)
    for frame in range(batch):
        table[frame, 1:, 1:] = pixels[frame].to(dtype).cumsum(0).cumsum(1)
    return table


_THREAD_BUFFERS = threading.local()


def _table_buffer(shape: tuple[int, ...]) -> np.ndarray:
    """This thread's int32 buffer for summed-area tables, reused from window to window (a
    detector thread runs one window at a time). A window of four 1080p frames has a 100 MB
    table; allocated anew, its pages were faulted in again for every window (thousands of page
    faults a frame). The buffer grows to the largest window the thread has seen (about 150 MB
    for a photo at the 4096-px working size) and dies with it."""
    needed = int(np.prod(shape))
    buffer = getattr(_THREAD_BUFFERS, "table", None)
    if buffer is None or buffer.size < needed:
        buffer = _THREAD_BUFFERS.table = np.empty(needed, np.int32)
    return buffer[:needed].reshape(shape)


def summed_area_table_opencv(pixels: torch.Tensor, reuse: bool = False) -> torch.Tensor:
    """`summed_area_table` of CPU frames by OpenCV's integral image (int32), each written in
    place into one table (stacking per-frame tables cost 8x the integrals themselves at 1080p);
    with `reuse`, into this thread's buffer, which the next call on the thread overwrites."""
    frames = pixels.numpy()
    batch, height, width, channels = frames.shape
    shape = (batch, height + 1, width + 1, channels)
    table = _table_buffer(shape) if reuse else np.empty(shape, np.int32)
    for frame, out in zip(frames, table):
        cv2.integral(frame, sum=out, sdepth=cv2.CV_32S)
    return torch.from_numpy(table)


class AreaSampler:
    """Area-interpolated resizes of uint8 (B, H, W, 3) frames, through one summed-area table per frame."""

    def __init__(self, pixels: torch.Tensor) -> None:
        self.pixels = pixels
        self.height, self.width = pixels.shape[1:3]
        fits_int32 = self.height * self.width * 255 < 2**31  # a whole frame's sum
        if pixels.device.type == "cpu" and fits_int32:
            # 20x faster than torch's cumsums at 1080p; the table lives as long as this sampler's detect_batch call
            self.table = summed_area_table_opencv(pixels, reuse=True)
        else:
            self.table = summed_area_table(pixels, torch.int32 if fits_int32 else torch.int64)

    @staticmethod
    def _cells(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """adaptive_avg_pool2d's cell bounds along one axis: [start + floor(i L / n), start + ceil((i + 1) L / n))."""
        steps = torch.arange(size, device=length.device)
        first = start[:, None] + torch.div(steps * length[:, None], size, rounding_mode="floor")
        last = start[:, None] + torch.div((steps + 1) * length[:, None] + size - 1, size, rounding_mode="floor")
        return first, last

    def _average(self, image_index: torch.Tensor, rows: tuple, columns: tuple) -> torch.Tensor:
        """(N, 3, h, w) float averages of the cells rows x columns of frames `image_index`."""
        # Corners are looked up as rows of the flattened table (index_select): 2x faster than
        # indexing the 4-d table with three broadcast index tensors.
        frames, table_height, table_width, channels = self.table.shape
        flat = self.table.reshape(-1, channels)
        base = image_index[:, None, None] * (table_height * table_width)
        top, bottom = rows[0][:, :, None], rows[1][:, :, None]
        left, right = columns[0][:, None, :], columns[1][:, None, :]

        def corner(row: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
            index = (base + row * table_width + column).reshape(-1)
            if flat.device.type == "cpu":  # numpy copies the 12-byte rows 1.2-2x faster than index_select
                return torch.from_numpy(np.take(flat.numpy(), index.numpy(), axis=0))
            return flat.index_select(0, index)

        sums = corner(bottom, right) - corner(top, right) - corner(bottom, left) + corner(top, left)
        areas = ((bottom - top) * (right - left)).to(torch.float32)
        sums = sums.view(*areas.shape, channels).to(torch.float32)
        return (sums / areas[..., None]).permute(0, 3, 1, 2)

    def resize(self, size: tuple[int, int]) -> torch.Tensor:
        """Every frame resized to (h, w), as `interpolate(frames, size, mode="area")` does.

        On a CPU every level comes from the table (1.3x `interpolate` on 1080p's largest
        level, 5-20x on the small ones); on a GPU a large level is `interpolate` itself (it
        reads each pixel once; the table's four lookups per output pixel were not measured there).
        """
        if self.table.device.type != "cpu" and size[0] * size[1] * 8 >= self.height * self.width:
            return interpolate(self.pixels.permute(0, 3, 1, 2).float(), size=size, mode="area")
        count = self.table.shape[0]
        device = self.table.device
        zeros = torch.zeros(count, dtype=torch.long, device=device)
        rows = self._cells(zeros, torch.full((count,), self.height, device=device), size[0])
        columns = self._cells(zeros, torch.full((count,), self.width, device=device), size[1])
        return self._average(torch.arange(count, device=device), rows, columns)

    def crops(self, boxes: torch.Tensor, image_index: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, size, size) crops at boxes given as facenet-pytorch's 1-based pixel corners
        (x1, y1, x2, y2), clipped to the frame as its `pad` does, each region resized as its
        `imresample` does; and which boxes had no pixel inside (their crops are mid-grey, zero
        once normalised)."""
        corners = boxes[:, :4].trunc().long()
        left = corners[:, 0].clamp(min=1) - 1
        top = corners[:, 1].clamp(min=1) - 1
        right = corners[:, 2].clamp(max=self.width)
        bottom = corners[:, 3].clamp(max=self.height)
        empty = (right <= left) | (bottom <= top)
        # a box wholly outside the frame: sample a pixel inside, then blank the crop
        left, top = left.clamp(0, self.width - 1), top.clamp(0, self.height - 1)
        right = torch.maximum(right.clamp(max=self.width), left + 1)
        bottom = torch.maximum(bottom.clamp(max=self.height), top + 1)
        crops = self._average(
            image_index.long(), self._cells(top, bottom - top, size), self._cells(left, right - left, size)
        )
        crops[empty] = 127.5
        return crops, empty


class StridedMaxPool(torch.nn.Module):
    """`MaxPool2d(kernel, stride, ceil_mode=True)` of channels-last maps as maxima of strided
    views: the same maxima, bit for bit (`tests/test_mtcnn.py`). On a CPU P-Net's first pool (2x2
    over ten channels) on a 1080p pyramid's first level took 1.1 ms instead of 5.5, R-Net's and
    O-Net's first pools on a chunk of crops half the time: torch's channels-last kernel
    vectorises over channels, and these networks have 10-32. Maps under `min_elements` values,
    where torch's kernel is the faster, go to it."""

    def __init__(self, pool: torch.nn.MaxPool2d, min_elements: int = 256 * 1024) -> None:
        super().__init__()
        if not (pool.ceil_mode and pool.padding == 0 and pool.dilation == 1):
            raise ValueError("StridedMaxPool covers MTCNN's pools: ceil mode, no padding, no dilation")
        self.pool = pool
        self.kernel, self.stride = int(pool.kernel_size), int(pool.stride)
        self.min_elements = min_elements

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if maps.numel() < self.min_elements or not maps.is_contiguous(memory_format=torch.channels_last):
            return self.pool(maps)
        values = maps.permute(0, 2, 3, 1)  # (B, H, W, C), contiguous
        rows = self._window_maxima(values, 1)
        return self._window_maxima(rows, 2).permute(0, 3, 1, 2)

    def _window_maxima(self, values: torch.Tensor, dim: int) -> torch.Tensor:
        """Along `dim`, the maximum of each window [i stride, i stride + kernel), clipped to the
        map; in ceil mode there is a window for every start inside the map that is not past
        the last full window's reach."""
        kernel, stride, size = self.kernel, self.stride, values.shape[dim]
        count = -(-(size - kernel) // stride) + 1
        count = count - 1 if (count - 1) * stride >= size else count

        def nth(offset: int) -> torch.Tensor:  # each window's offset-th element, where the map has it
            index = [slice(None)] * values.dim()
            index[dim] = slice(offset, None, stride)
            return values[tuple(index)].narrow(dim, 0, min(count, -(-(size - offset) // stride)))

        first = nth(0)
        result = torch.empty_like(first)
        for offset in range(1, kernel):
            other = nth(offset)
            length = other.shape[dim]
            source = first if offset == 1 else result
            torch.maximum(source.narrow(dim, 0, length), other, out=result.narrow(dim, 0, length))
            if offset == 1 and length < count:  # the last window hangs over the edge: its first element alone
                result.narrow(dim, length, count - length).copy_(first.narrow(dim, length, count - length))
        return result


class RowwisePReLU(torch.nn.Module):
    """PReLU of channels-last maps over whole rows of a map (width x channels values, the
    weights tiled along the row): the same values bit for bit. torch's kernel steps through each
    pixel's channels, which with ten channels (P-Net's first layer) took 5-6 ms on a 1080p
    pyramid's first level, against 2.6 ms here. Other inputs go to the module itself."""

    def __init__(self, prelu: torch.nn.PReLU) -> None:
        super().__init__()
        self.prelu = prelu

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if maps.dim() != 4 or not maps.is_contiguous(memory_format=torch.channels_last):
            return self.prelu(maps)
        batch, channels, height, width = maps.shape
        rows = maps.permute(0, 2, 3, 1).reshape(batch * height, width * channels)
        activated = torch.nn.functional.prelu(rows, self.prelu.weight.repeat(width))
        return activated.view(batch, height, width, channels).permute(0, 3, 1, 2)


def for_cpu(network: torch.nn.Module) -> torch.nn.Module:
    """A copy of an MTCNN network (the original is untouched) whose max-pools are
    `StridedMaxPool`s and whose PReLUs over a channel count that is not a multiple of 8 are
    `RowwisePReLU`s: the same answers, faster on a CPU."""
    network = copy.deepcopy(network)
    for name, module in list(network.named_children()):
        if isinstance(module, torch.nn.MaxPool2d):
            setattr(network, name, StridedMaxPool(module))
        elif isinstance(module, torch.nn.PReLU) and module.num_parameters % 8:
            setattr(network, name, RowwisePReLU(module))
    return network


def normalise_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """MTCNN's input scaling: pixel values 0..255 to about -1..1."""
    return (pixels - 127.5) * 0.0078125


def crop_box(pixels: torch.Tensor, box: torch.Tensor, size: int) -> torch.Tensor | None:
    """(3, size, size) crop of uint8 (H, W, 3) `pixels` at one box, as `AreaSampler.crops` takes it
    (facenet-pytorch's pad + imresample); None when no pixel of the box is inside the frame.
    For a few boxes of one frame, where a summed-area table of the whole frame would cost more."""
    height, width = pixels.shape[:2]
    left, top, right, bottom = box[:4].trunc().long().tolist()
    left, top, right, bottom = max(left, 1) - 1, max(top, 1) - 1, min(right, width), min(bottom, height)
    if right <= left or bottom <= top:
        return None
    region = pixels[top:bottom, left:right].permute(2, 0, 1).unsqueeze(0).float()
    return interpolate(region, size=(size, size), mode="area")[0]


def place_landmarks(boxes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(N, 5, 2) landmarks in frame pixels from O-Net's (N, 10) outputs (x then y, as fractions
    of the box it was shown), placed in those (N, 4+) boxes as facenet-pytorch places them."""
    box_width = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    box_height = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    return torch.stack(
        [box_width * points[:, :5] + boxes[:, :1] - 1, box_height * points[:, 5:] + boxes[:, 1:2] - 1], dim=2
    )


def run_in_chunks(network: torch.nn.Module, inputs: torch.Tensor, chunk: int) -> tuple[torch.Tensor, ...]:
    """`network` on `inputs` in slices of at most `chunk`, each of its outputs joined again."""
    outputs = [network(inputs[start : start + chunk]) for start in range(0, len(inputs), chunk)]
    return tuple(torch.cat(parts) for parts in zip(*outputs))


def _stage_one(sampler: AreaSampler, pnet: torch.nn.Module, scales: list[float], threshold: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    from facenet_pytorch.models.utils.detect_face import generateBoundingBox

    boxes, image_index = [], []
    for scale in scales:
        size = (int(sampler.height * scale + 1), int(sampler.width * scale + 1))
        level = normalise_pixels(sampler.resize(size)).contiguous(memory_format=torch.channels_last)
        # On a CPU one frame at a time: 1.7x faster than four at 1080p (one frame's maps fit the caches).
        regression, probabilities = run_in_chunks(pnet, level, 1 if level.device.type == "cpu" else len(level))
        level_boxes, level_index = generateBoundingBox(regression, probabilities[:, 1], scale, threshold)
        keep = batched_nms(level_boxes[:, :4], level_boxes[:, 4], level_index, 0.5)
        boxes.append(level_boxes[keep])
        image_index.append(level_index[keep])
    boxes_all, index_all = torch.cat(boxes), torch.cat(image_index)
    keep = batched_nms(boxes_all[:, :4], boxes_all[:, 4], index_all, 0.7)
    boxes_all, index_all = boxes_all[keep], index_all[keep]
    widths = boxes_all[:, 2] - boxes_all[:, 0]
    heights = boxes_all[:, 3] - boxes_all[:, 1]
    corrected = torch.stack([
        boxes_all[:, 0] + boxes_all[:, 5] * widths,
        boxes_all[:, 1] + boxes_all[:, 6] * heights,
        boxes_all[:, 2] + boxes_all[:, 7] * widths,
        boxes_all[:, 3] + boxes_all[:, 8] * heights,
        boxes_all[:, 4],
    ], dim=1)
    return corrected, index_all


@torch.no_grad()
def detect_batch(
    frames: np.ndarray,
    min_face_size: float,
    pnet: torch.nn.Module,
    rnet: torch.nn.Module,
    onet: torch.nn.Module,
    thresholds: list[float],
    factor: float,
    device: torch.device,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per frame of uint8 (B, H, W, 3) RGB `frames`: boxes (N, 5: x1, y1, x2, y2, score) and
    landmarks (N, 5, 2), as facenet-pytorch's `detect_face` returns them. `rnet` and `onet` get
    each stage's candidates whole and batch them as they run best
    (`fer_batch.detection.BucketedBatches`)."""
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, rerec

    batch, height, width = frames.shape[:3]
    empty = ([np.zeros((0, 5), np.float32)] * batch, [np.zeros((0, 5, 2), np.float32)] * batch)
    scales = pyramid_scales(height, width, min_face_size, factor)
    if not scales:
        return empty
    sampler = AreaSampler(torch.as_tensor(frames, device=device))
    boxes, image_index = _stage_one(sampler, pnet, scales, thresholds[0])
    if len(boxes) == 0:
        return empty

    # Stage two: R-Net on 24x24 crops of the squared candidates.
    boxes = rerec(boxes)
    crops, outside = sampler.crops(boxes, image_index, 24)
    regression, probabilities = rnet(normalise_pixels(crops))
    scores = probabilities[:, 1].masked_fill(outside, 0.0)
    keep = scores > thresholds[1]
    boxes = torch.cat([boxes[keep, :4], scores[keep, None]], dim=1)
    image_index, regression = image_index[keep], regression[keep]
    keep = batched_nms(boxes[:, :4], boxes[:, 4], image_index, 0.7)
    boxes, image_index, regression = boxes[keep], image_index[keep], regression[keep]
    boxes = rerec(bbreg(boxes, regression))
    if len(boxes) == 0:
        return empty

    # Stage three: O-Net on 48x48 crops: final score, box correction and landmarks.
    crops, outside = sampler.crops(boxes, image_index, 48)
    regression, points, probabilities = onet(normalise_pixels(crops))
    scores = probabilities[:, 1].masked_fill(outside, 0.0)
    keep = scores > thresholds[2]
    boxes = torch.cat([boxes[keep, :4], scores[keep, None]], dim=1)
    image_index, regression, points = image_index[keep], regression[keep], points[keep]
    landmarks = place_landmarks(boxes, points)
    boxes = bbreg(boxes, regression)
    keep = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_index, 0.7, "Min")
    boxes, image_index, landmarks = boxes[keep].cpu().numpy(), image_index[keep].cpu().numpy(), landmarks[keep].cpu().numpy()
    return [boxes[image_index == frame] for frame in range(batch)], [landmarks[image_index == frame] for frame in range(batch)]
