"""Synthetic face clips from still FER2013 images, for training and scoring the GRU.

FER2013 has no video, so clips are built from stills, labelled per frame:
- steady clips: one face under a progressive jitter (shift, zoom, rotation, light
  drifting from one random setting to another, plus frame-to-frame shake, and an
  occluder that may slide in), label constant: the GRU should hold its answer;
- transition clips: a face of one emotion replaced mid-clip by a face of another
  (a hard cut or a two-frame cross-fade, labelled by the dominant face): the GRU
  must follow a real change within a frame or two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fer_batch.preprocess import Preprocessing, normalize_crops
from fer_batch.training.augment import AugmentConfig, JitterParams, apply_geometry, apply_photometric
from fer_batch.training.data import FaceDataset


@dataclass
class ClipBatch:
    frames: torch.Tensor  # (B, T, 1, H, W) normalised
    labels: torch.Tensor  # (B, T) int64
    is_transition: torch.Tensor  # (B,) bool


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


def make_clips(
    dataset: FaceDataset,
    count: int,
    length: int,
    preprocessing: Preprocessing,
    generator: torch.Generator,
    transition_fraction: float = 0.4,
    augment: AugmentConfig = AugmentConfig(),
    occlusion_probability: float = 0.25,
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
    for t in range(length):
        weight = torch.full((count,), t / max(1, length - 1))
        params = start.interpolate(end, weight)
        shake = JitterParams.sample(count, AugmentConfig(0.015, 0.02, 2.0, 0.0, 0.05, 0.03), generator)
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
        frames.append(apply_photometric(apply_geometry(mixed, params), params))
        labels[:, t] = np.where(blend.numpy() >= 0.5, labels_np[second], labels_np[first])
    stacked = torch.stack(frames, dim=1)
    occluded = torch.rand(count, generator=generator) < occlusion_probability
    if occluded.any():
        stacked[occluded] = _moving_occluder(stacked[occluded], generator)
    return ClipBatch(stacked, torch.from_numpy(labels), torch.from_numpy(is_transition))
