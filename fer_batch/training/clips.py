"""Synthetic face clips from still FER2013 images, for training and scoring the GRU.

FER2013 has no video, so clips are built from stills, labelled per frame:
- steady clips: one face under a progressive jitter (shift, zoom, rotation, light
  drifting from one random setting to another, plus frame-to-frame shake, and an
  occluder that may slide in), label constant: the GRU should hold its answer;
- transition clips: a face of one emotion replaced mid-clip by a face of another
  (a hard cut or a two-frame cross-fade, labelled by the dominant face): the GRU
  must follow a real change within a frame or two.

With a `Realism`, the clips also look like tracks of real video: the frame-to-frame
alignment shake that MTCNN's landmarks give on the shared crowd clip (measured by
`fer_batch.training.jitter`), faces of 20-40 px enlarged to the crop, motion blur, JPEG
artefacts, brief occlusions, small head-pose warps and missed frames (frames where the
detector did not find the face, so the track has no row: the GRU steps over them, see
`ClipBatch.tracked`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from fer_batch.preprocess import Preprocessing, normalize_crops
from fer_batch.training.augment import AugmentConfig, JitterParams, apply_geometry, apply_photometric
from fer_batch.training.data import FaceDataset


@dataclass(frozen=True)
class Realism:
    """What makes a synthetic clip look like a real track; defaults measured or chosen as noted."""

    # Per-frame standard deviations of the alignment, measured on the shared crowd clip's
    # 10 tracks of 10+ frames (614 frame pairs): `python -m fer_batch.training.jitter` on
    # `fer annotate ../shared/media` (every frame). The plain clips shake about 4x less.
    shift_std: float = 0.037  # fraction of the crop
    log_scale_std: float = 0.027
    angle_std_deg: float = 1.40
    low_resolution_probability: float = 0.5  # per clip: the face was 20-40 px tall in the frame
    low_resolution_px: tuple[int, int] = (20, 40)
    blur_probability: float = 0.3  # per frame: motion blur along a random direction
    blur_max_px: int = 5
    jpeg_quality: tuple[int, int] = (30, 90)  # per clip, every frame re-encoded
    brief_occlusion_probability: float = 0.2  # per clip: a block over 1-3 consecutive frames
    # Frames missing inside a track: 3.8 % of the frames between a track's first and last face,
    # measured as above when a face the detector missed on a frame had no row there. Since keyframe
    # recovery (fer_batch.pipeline.track_faces) the crowd tracks miss 0.16-1.1 %; the clips keep the
    # higher rate, that of a face lost for a moment (turned away, hidden) which refinement cannot
    # hold: the harder case for the GRU. Gaps of 1-4 frames: 1-3 measured then, 4 since the
    # small-face schedule (a head turned away, refined, lost, then detected again).
    missed_frame_share: float = 0.038
    max_missed_run: int = 4
    # Head turning or nodding a little over a clip: a perspective warp whose horizontal and
    # vertical tilt drift from one value to another, each uniform within +-pose_tilt (chosen,
    # not measured: at 0.08 the crop's two sides are magnified 1.17x and 0.85x).
    pose_tilt: float = 0.08


def _low_resolution(frames: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Each (1, H, W) frame shrunk to its size by area averaging, then enlarged back (bilinear)."""
    out = frames.clone()
    height, width = frames.shape[-2:]
    for size in sizes.unique().tolist():
        if size <= 0:
            continue
        rows = sizes == size
        small = F.interpolate(frames[rows], size=(size, size), mode="area")
        out[rows] = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    return out


def _motion_blur(frames: torch.Tensor, lengths: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Each frame convolved with a line of `length` pixels at `angle` (length 1: unchanged)."""
    count, _, height, width = frames.shape
    size = int(lengths.max()) | 1
    if size <= 1:
        return frames
    kernels = torch.zeros(count, 1, size, size)
    centre = size // 2
    for index, (length, angle) in enumerate(zip(lengths.tolist(), angles.tolist())):
        for step in np.linspace(-(length - 1) / 2, (length - 1) / 2, max(1, length)):
            x, y = int(round(centre + step * math.cos(angle))), int(round(centre + step * math.sin(angle)))
            kernels[index, 0, y, x] += 1.0
        kernels[index] /= kernels[index].sum()
    padded = F.pad(frames.reshape(1, count, height, width), (centre,) * 4, mode="replicate")
    return F.conv2d(padded, kernels, groups=count).reshape(count, 1, height, width)


def _jpeg(frames: torch.Tensor, qualities: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Each normalised frame through a JPEG encode and decode at its quality."""
    pixels = ((frames * preprocessing.pixel_std + preprocessing.pixel_mean) * 255).clamp(0, 255).round().to(torch.uint8)
    decoded = []
    for image, quality in zip(pixels[:, 0].numpy(), qualities.tolist()):
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        decoded.append(cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE) if ok else image)
    return normalize_crops(np.stack(decoded), preprocessing)


def _pose_warp(frames: torch.Tensor, tilt_x: torch.Tensor, tilt_y: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) frames seen from a little to the side or above: the homography whose last
    row is (tilt_x, tilt_y, 1), about the crop centre (tilt 0: unchanged)."""
    count, _, height, width = frames.shape
    identity = torch.eye(2, 3).unsqueeze(0).expand(count, 2, 3)
    grid = F.affine_grid(identity, [count, 1, height, width], align_corners=False)
    depth = 1.0 + tilt_x.view(-1, 1, 1) * grid[..., 0] + tilt_y.view(-1, 1, 1) * grid[..., 1]
    return F.grid_sample(frames, grid / depth.unsqueeze(-1), mode="bilinear", padding_mode="border", align_corners=False)


def _low_resolution_sizes(count: int, realism: Realism, generator: torch.Generator) -> torch.Tensor:
    """Per image, the face size (20-40 px) it is shrunk to with realism's probability, else 0 (kept)."""
    low_resolution = torch.rand(count, generator=generator) < realism.low_resolution_probability
    sizes = torch.randint(realism.low_resolution_px[0], realism.low_resolution_px[1] + 1, (count,), generator=generator)
    return torch.where(low_resolution, sizes, torch.zeros_like(sizes))


def _blur_lengths(count: int, realism: Realism, generator: torch.Generator) -> torch.Tensor:
    """Per image, the motion blur's length in pixels: 2 to blur_max_px with realism's probability, else 1 (none)."""
    blurred = torch.rand(count, generator=generator) < realism.blur_probability
    return torch.where(blurred, torch.randint(2, realism.blur_max_px + 1, (count,), generator=generator), 1)


def degrade_like_detections(
    images: torch.Tensor,
    share: float,
    realism: Realism,
    preprocessing: Preprocessing,
    generator: torch.Generator,
) -> torch.Tensor:
    """A `share` of normalised (N, 1, H, W) stills made to look like faces the detect path crops
    from real photos and video: each chosen image gets its own small head-pose warp, low
    resolution (with realism's probability; a face of 20-40 px enlarged to the crop), motion blur
    (with its probability) and a JPEG quality. The other images are returned unchanged."""
    chosen = torch.nonzero(torch.rand(images.shape[0], generator=generator) < share).flatten()
    if chosen.numel() == 0:
        return images
    count = chosen.numel()
    tilt = (torch.rand(2, count, generator=generator) * 2 - 1) * realism.pose_tilt
    sizes = _low_resolution_sizes(count, realism, generator)
    lengths = _blur_lengths(count, realism, generator)
    angles = torch.rand(count, generator=generator) * math.pi
    qualities = torch.randint(realism.jpeg_quality[0], realism.jpeg_quality[1] + 1, (count,), generator=generator)
    degraded = _low_resolution(_pose_warp(images[chosen], tilt[0], tilt[1]), sizes)
    degraded = _jpeg(_motion_blur(degraded, lengths, angles), qualities, preprocessing)
    out = images.clone()
    out[chosen] = degraded.to(images.dtype)
    return out


def _missed_frames(count: int, length: int, realism: Realism, generator: torch.Generator) -> torch.Tensor:
    """(B, T) bool, True where the detector found the face: runs of 1..max_missed_run frames
    missed, starting at a rate that would miss `missed_frame_share` of frames (about 10 % fewer
    are missed: a run never joins the one before it and stops before the last frame); a track's
    first and last faces are found by definition."""
    present = torch.ones(count, length, dtype=torch.bool)
    mean_run = (1 + realism.max_missed_run) / 2
    rate = realism.missed_frame_share / mean_run * length / max(1, length - 2)  # runs start inside the clip only
    starts = torch.rand(count, length, generator=generator) < rate
    runs = torch.randint(1, realism.max_missed_run + 1, (count, length), generator=generator)
    for clip, start in (torch.nonzero(starts[:, 1:-1]) + torch.tensor([0, 1])).tolist():  # in time order
        if present[clip, start - 1]:  # a run does not join the one before it
            present[clip, start : min(length - 1, start + int(runs[clip, start]))] = False
    return present


@dataclass
class TrackedClips:
    """Clips as a tracker hands them on: in each clip the frames where the face was found come
    first, in time order, and the missed ones follow as padding (valid False), so a GRU run
    over a row steps over the gaps and its outputs at valid places see only found frames."""

    frames: torch.Tensor  # (B, T, 1, H, W)
    labels: torch.Tensor  # (B, T) int64, -1 on padding
    frame_index: torch.Tensor  # (B, T) int64: the clip frame each place shows
    valid: torch.Tensor  # (B, T) bool, a prefix of each row


@dataclass
class ClipBatch:
    frames: torch.Tensor  # (B, T, 1, H, W) normalised
    labels: torch.Tensor  # (B, T) int64
    is_transition: torch.Tensor  # (B,) bool
    present: torch.Tensor | None = None  # (B, T) bool, False where the detector missed the face; None: all found

    def tracked(self) -> TrackedClips:
        present = self.present if self.present is not None else torch.ones(self.labels.shape, dtype=torch.bool)
        order = torch.argsort((~present).to(torch.int8), dim=1, stable=True)
        rows = torch.arange(order.shape[0]).unsqueeze(1)
        valid = present[rows, order]
        return TrackedClips(self.frames[rows, order], self.labels[rows, order].masked_fill(~valid, -1), order, valid)


def _moving_occluder(frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A noise block that slides in from one side over the clip (B, T, 1, H, W)."""
    clips, length, _, height, width = frames.shape
    frames = frames.clone()
    for clip in range(clips):
        block_h = int(torch.randint(height // 6, height // 3 + 1, (1,), generator=generator))
        block_w = int(torch.randint(width // 6, width // 3 + 1, (1,), generator=generator))
        top = int(torch.randint(0, height - block_h + 1, (1,), generator=generator))
        final_left = int(torch.randint(0, width - block_w + 1, (1,), generator=generator))
        start = int(torch.randint(0, length, (1,), generator=generator))
        value = float(torch.randn(1, generator=generator))
        for t in range(start, length):
            progress = (t - start + 1) / max(1, length - start)
            left = int(round(-block_w + (final_left + block_w) * progress))
            x0, x1 = max(0, left), max(0, min(width, left + block_w))
            if x1 > x0:
                frames[clip, t, :, top : top + block_h, x0:x1] = value
    return frames


def _brief_occlusions(frames: torch.Tensor, probability: float, generator: torch.Generator) -> None:
    """In place: in a share of clips, a noise block covers part of the face for 1-3 frames."""
    clips, length, _, height, width = frames.shape
    for clip in torch.nonzero(torch.rand(clips, generator=generator) < probability).flatten().tolist():
        span = int(torch.randint(1, 4, (1,), generator=generator))
        start = int(torch.randint(0, max(1, length - span + 1), (1,), generator=generator))
        block_h = int(torch.randint(height // 4, height // 2 + 1, (1,), generator=generator))
        block_w = int(torch.randint(width // 4, width // 2 + 1, (1,), generator=generator))
        top = int(torch.randint(0, height - block_h + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - block_w + 1, (1,), generator=generator))
        frames[clip, start : start + span, :, top : top + block_h, left : left + block_w] = float(
            torch.randn(1, generator=generator)
        )


def make_clips(
    dataset: FaceDataset,
    count: int,
    length: int,
    preprocessing: Preprocessing,
    generator: torch.Generator,
    transition_fraction: float = 0.4,
    augment: AugmentConfig = AugmentConfig(),
    occlusion_probability: float = 0.25,
    realism: Realism | None = None,
) -> ClipBatch:
    """`count` clips of `length` frames drawn from `dataset` (see module docstring)."""
    labels_np = dataset.labels
    first = torch.randint(0, len(dataset), (count,), generator=generator).numpy()
    is_transition = (torch.rand(count, generator=generator) < transition_fraction).numpy()
    second = first.copy()
    cut = np.full(count, length, dtype=np.int64)
    crossfade = np.zeros(count, dtype=bool)
    for clip in np.nonzero(is_transition)[0]:
        candidates = np.nonzero(labels_np != labels_np[first[clip]])[0]
        second[clip] = candidates[int(torch.randint(0, len(candidates), (1,), generator=generator))]
        cut[clip] = int(torch.randint(max(1, length // 4), max(2, length - length // 4), (1,), generator=generator))
        crossfade[clip] = bool(torch.rand(1, generator=generator) < 0.5)

    start = JitterParams.sample(count, augment, generator)
    end = JitterParams.sample(count, augment, generator)
    end.flip = start.flip
    frames = []
    labels = np.empty((count, length), dtype=np.int64)
    images_a = normalize_crops(dataset.images[first], preprocessing)
    images_b = normalize_crops(dataset.images[second], preprocessing)
    if realism is not None:
        sizes = _low_resolution_sizes(count, realism, generator)
        qualities = torch.randint(realism.jpeg_quality[0], realism.jpeg_quality[1] + 1, (count,), generator=generator)
        tilt_start, tilt_end = ((torch.rand(2, count, generator=generator) * 2 - 1) * realism.pose_tilt for _ in range(2))
    for t in range(length):
        weight = torch.full((count,), t / max(1, length - 1))
        params = start.interpolate(end, weight)
        shake = JitterParams.sample(count, AugmentConfig(0.015, 0.02, 2.0, 0.0, 0.05, 0.03), generator)
        if realism is not None:  # the measured shake, Gaussian, instead of the small uniform one
            def normal(std: float) -> torch.Tensor:
                return torch.randn(count, generator=generator) * std

            shake.shift_x, shake.shift_y = normal(realism.shift_std), normal(realism.shift_std)
            shake.angle = normal(math.radians(realism.angle_std_deg))
            params.scale = params.scale * torch.exp(normal(realism.log_scale_std))
        params.shift_x += shake.shift_x
        params.shift_y += shake.shift_y
        params.angle += shake.angle
        params.brightness += shake.brightness
        # Weight of the second face: 0 before the cut, 1 after; cross-fades pass 1/3 and 2/3.
        blend = torch.from_numpy(np.where(t >= cut, 1.0, 0.0)).float()
        fading = torch.from_numpy(crossfade & (t >= cut - 1) & (t <= cut)).bool()
        blend = torch.where(fading & (torch.from_numpy(cut) == t), torch.tensor(2 / 3), blend)
        blend = torch.where(fading & (torch.from_numpy(cut) - 1 == t), torch.tensor(1 / 3), blend)
        mixed = images_a * (1 - blend.view(-1, 1, 1, 1)) + images_b * blend.view(-1, 1, 1, 1)
        frame = apply_photometric(apply_geometry(mixed, params), params)
        if realism is not None:
            tilt = tilt_start + (tilt_end - tilt_start) * weight
            frame = _low_resolution(_pose_warp(frame, tilt[0], tilt[1]), sizes)
            lengths = _blur_lengths(count, realism, generator)
            frame = _motion_blur(frame, lengths, torch.rand(count, generator=generator) * math.pi)
            frame = _jpeg(frame, qualities, preprocessing)
        frames.append(frame)
        labels[:, t] = np.where(blend.numpy() >= 0.5, labels_np[second], labels_np[first])
    stacked = torch.stack(frames, dim=1)
    occluded = torch.rand(count, generator=generator) < occlusion_probability
    if occluded.any():
        stacked[occluded] = _moving_occluder(stacked[occluded], generator)
    present = None
    if realism is not None:
        _brief_occlusions(stacked, realism.brief_occlusion_probability, generator)
        present = _missed_frames(count, length, realism, generator)
    return ClipBatch(stacked, torch.from_numpy(labels), torch.from_numpy(is_transition), present)
