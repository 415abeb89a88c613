"""Batched emotion classification of face crops with per-track GRU state.

Crops from many frames, tracks and files are encoded by the CNN in one batch; the
GRU then advances each track by one step in frame order, keeping its hidden state
between batches, so a video is classified as a stream. A face with no state (a
new track, or any face of a still image) starts from zeros: a sequence of one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fer_batch.model import Checkpoint
from fer_batch.preprocess import normalize_crops

TrackKey = tuple[int, int]  # (source number in the run, track id)


@dataclass
class CropRequest:
    """One crop to classify; crops of one frame share `frame_key`, and arrive in time order."""

    track_key: TrackKey
    frame_key: tuple[int, int]  # (source number, frame index)
    crop: np.ndarray  # (H, W) uint8


class SequenceClassifier:
    def __init__(self, checkpoint: Checkpoint, device: torch.device) -> None:
        self.checkpoint = checkpoint
        self.device = device
        self.model = checkpoint.model.to(device).eval()
        self.preprocessing = checkpoint.preprocessing
        self._hidden: dict[TrackKey, torch.Tensor] = {}

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.checkpoint.class_names

    @torch.no_grad()
    def classify(self, requests: list[CropRequest]) -> np.ndarray:
        """Probabilities (N, C) float32 for the requests, in their order."""
        if not requests:
            return np.empty((0, len(self.class_names)), dtype=np.float32)
        crops = normalize_crops(np.stack([request.crop for request in requests]), self.preprocessing).to(self.device)
        features = self.model.encode(crops, flip_average=self.preprocessing.tta_flip)
        probabilities = torch.empty(len(requests), len(self.class_names), device=self.device)
        hidden_size = self.model.hidden_size
        start = 0
        while start < len(requests):
            end = start
            while end < len(requests) and requests[end].frame_key == requests[start].frame_key:
                end += 1
            keys = [request.track_key for request in requests[start:end]]
            zeros = torch.zeros(hidden_size, device=self.device)
            hidden = torch.stack([self._hidden.get(key, zeros) for key in keys]).unsqueeze(0)
            logits, new_hidden = self.model.sequence_logits(features[start:end].unsqueeze(1), hidden)
            probabilities[start:end] = torch.softmax(logits.squeeze(1).float(), dim=1)
            for position, key in enumerate(keys):
                self._hidden[key] = new_hidden[0, position]
            start = end
        return probabilities.cpu().numpy().astype(np.float32)

    def forget_source(self, source_number: int) -> None:
        """Drop the GRU state of a finished source (tracker state resets per video too)."""
        for key in [key for key in self._hidden if key[0] == source_number]:
            del self._hidden[key]
