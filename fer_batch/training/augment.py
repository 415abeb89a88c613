"""Batched augmentation on normalised crops, vectorised so it costs little next to the CNN.

The same jitter parameters drive still-image augmentation and the progressive jitter
of synthetic clips (`clips.py`), so both see one distribution of poses and lighting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    max_shift: float = 0.10  # fraction of the crop size
    max_scale: float = 0.12  # relative zoom in or out
    max_rotation_deg: float = 12.0
    flip_probability: float = 0.5
    max_brightness: float = 0.35  # in normalised units
    max_contrast: float = 0.30  # relative
    erase_probability: float = 0.4
    erase_max_area: float = 0.20


@dataclass
class JitterParams:
    """Per-image jitter, each tensor shaped (N,)."""

    shift_x: torch.Tensor
    shift_y: torch.Tensor
    scale: torch.Tensor
    angle: torch.Tensor  # radians
    flip: torch.Tensor  # bool
    brightness: torch.Tensor
    contrast: torch.Tensor

    @classmethod
    def sample(cls, count: int, config: AugmentConfig, generator: torch.Generator) -> "JitterParams":
        def uniform(limit: float) -> torch.Tensor:
            return (torch.rand(count, generator=generator) * 2 - 1) * limit

        return cls(
            shift_x=uniform(config.max_shift),
            shift_y=uniform(config.max_shift),
            scale=1 + uniform(config.max_scale),
            angle=uniform(math.radians(config.max_rotation_deg)),
            flip=torch.rand(count, generator=generator) < config.flip_probability,
            brightness=uniform(config.max_brightness),
            contrast=1 + uniform(config.max_contrast),
        )

    def interpolate(self, other: "JitterParams", weight: torch.Tensor) -> "JitterParams":
        """Blend towards `other` by weight (N,); the flip is kept from self (a face does not mirror mid-clip)."""
        def mix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + (b - a) * weight

        return JitterParams(
            mix(self.shift_x, other.shift_x),
            mix(self.shift_y, other.shift_y),
            mix(self.scale, other.scale),
            mix(self.angle, other.angle),
            self.flip.clone(),
            mix(self.brightness, other.brightness),
            mix(self.contrast, other.contrast),
        )


def apply_geometry(images: torch.Tensor, params: JitterParams) -> torch.Tensor:
    """Shift, zoom, rotate and mirror (N, 1, H, W) images; borders replicate like a real crop."""
    cos, sin = torch.cos(params.angle), torch.sin(params.angle)
    inverse_scale = 1.0 / params.scale
    mirror = torch.where(params.flip, -1.0, 1.0)
    theta = torch.zeros(images.shape[0], 2, 3, dtype=images.dtype)
    theta[:, 0, 0] = cos * inverse_scale * mirror
    theta[:, 0, 1] = -sin * inverse_scale
    theta[:, 1, 0] = sin * inverse_scale * mirror
    theta[:, 1, 1] = cos * inverse_scale
    theta[:, 0, 2] = params.shift_x * 2
    theta[:, 1, 2] = params.shift_y * 2
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def apply_photometric(images: torch.Tensor, params: JitterParams) -> torch.Tensor:
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    contrast = params.contrast.view(-1, 1, 1, 1)
    brightness = params.brightness.view(-1, 1, 1, 1)
    return (images - mean) * contrast + mean + brightness


def random_erase(
    images: torch.Tensor, probability: float, max_area: float, generator: torch.Generator
) -> torch.Tensor:
    """Blank a random rectangle with noise in a fraction of the images (occlusion robustness)."""
    count, _, height, width = images.shape
    chosen = torch.rand(count, generator=generator) < probability
    if not chosen.any():
        return images
    images = images.clone()
    areas = torch.rand(count, generator=generator) * (max_area - 0.02) + 0.02
    aspects = torch.exp((torch.rand(count, generator=generator) * 2 - 1) * math.log(2.5))
    for index in torch.nonzero(chosen).flatten().tolist():
        erase_h = max(1, min(height, int(round(math.sqrt(areas[index] * height * width * aspects[index])))))
        erase_w = max(1, min(width, int(round(math.sqrt(areas[index] * height * width / aspects[index])))))
        top = int(torch.randint(0, height - erase_h + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - erase_w + 1, (1,), generator=generator))
        images[index, :, top : top + erase_h, left : left + erase_w] = torch.randn(
            1, erase_h, erase_w, generator=generator
        )
    return images


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Full still-image augmentation of a normalised batch."""
    params = JitterParams.sample(images.shape[0], config, generator)
    images = apply_geometry(images, params)
    images = apply_photometric(images, params)
    return random_erase(images, config.erase_probability, config.erase_max_area, generator)
