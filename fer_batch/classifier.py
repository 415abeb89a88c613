"""Batched emotion classification of face crops with per-track GRU state.

Crops from many frames, tracks and files are encoded by the CNN in one batch; the
GRU then advances each track by one step in frame order, keeping its hidden state
between batches, so a video is classified as a stream. A face with no state (a
new track, or any face of a still image) starts from zeros: a sequence of one.
"""

from __future__ import annotations

import numpy as np
import torch

from fer_batch.model import Checkpoint
from fer_batch.preprocess import normalize_crops
from fer_batch.runtime import bucket_size

TrackKey = tuple[int, int]  # (source number in the run, track id)


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
    def classify(self, crops: np.ndarray, source_numbers: np.ndarray, frame_index: np.ndarray, track_id: np.ndarray) -> np.ndarray:
        """Probabilities (N, C) float32 of (N, H, W) uint8 crops given in time order.

        Consecutive crops of one frame (same source number and frame index) advance their
        tracks' GRU states together.
        """
        count = len(crops)
        if count == 0:
            return np.empty((0, len(self.class_names)), dtype=np.float32)
        features = self._encode(crops)
        probabilities = torch.empty(count, len(self.class_names), device=self.device)
        zeros = torch.zeros(self.model.hidden_size, device=self.device)
        new_frame = np.ones(count, bool)
        new_frame[1:] = (source_numbers[1:] != source_numbers[:-1]) | (frame_index[1:] != frame_index[:-1])
        starts = np.flatnonzero(new_frame).tolist() + [count]
        for start, end in zip(starts[:-1], starts[1:]):
            keys = list(zip(source_numbers[start:end].tolist(), track_id[start:end].tolist()))
            hidden = torch.stack([self._hidden.get(key, zeros) for key in keys]).unsqueeze(0)
            logits, new_hidden = self.model.sequence_logits(features[start:end].unsqueeze(1), hidden)
            probabilities[start:end] = torch.softmax(logits.squeeze(1).float(), dim=1)
            for position, key in enumerate(keys):
                self._hidden[key] = new_hidden[0, position]
        return probabilities.cpu().numpy().astype(np.float32)

    def _encode(self, crops: np.ndarray) -> torch.Tensor:
        count = len(crops)
        inputs = normalize_crops(crops, self.preprocessing).to(self.device)
        padded = bucket_size(count)  # a few batch shapes only: see fer_batch.runtime.bucket_size
        if padded != count:
            inputs = torch.cat([inputs, inputs.new_zeros((padded - count, *inputs.shape[1:]))])
        return self.model.encode(inputs, flip_average=self.preprocessing.tta_flip)[:count]

    @torch.no_grad()
    def encode(self, crops: np.ndarray) -> np.ndarray:
        """CNN features (N, D) float32 of (N, H, W) uint8 crops: the per-frame half of `classify`,
        for engines that track in pieces and run the GRU once the tracks are joined (fer_batch.ray)."""
        if len(crops) == 0:
            return np.empty((0, self.model.feature_size), np.float32)
        return self._encode(crops).float().cpu().numpy()

    @torch.no_grad()
    def track_probabilities(self, features: np.ndarray) -> np.ndarray:
        """Probabilities (T, C) of one track's features (T, D) in frame order, from a zero state:
        what `classify` gives that track's faces one frame at a time."""
        if len(features) == 0:
            return np.empty((0, len(self.class_names)), np.float32)
        sequence = torch.from_numpy(np.ascontiguousarray(features, np.float32)).to(self.device).unsqueeze(0)
        logits, _ = self.model.sequence_logits(sequence)
        return torch.softmax(logits[0].float(), dim=1).cpu().numpy().astype(np.float32)

    def forget_source(self, source_number: int) -> None:
        """Drop the GRU state of a finished source (tracker state resets per video too)."""
        for key in [key for key in self._hidden if key[0] == source_number]:
            del self._hidden[key]
