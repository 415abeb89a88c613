"""Batched emotion classification of face crops with per-track GRU state.

Crops from many frames, tracks and files are encoded by the CNN in one batch; the
GRU then advances each track by one step in frame order, keeping its hidden state
between batches, so a video is classified as a stream. A face with no state (a
new track, or any face of a still image) starts from zeros: a sequence of one. Unless
`temporal="none"` (the frame head alone), the GRU's probabilities are then filtered
forward per track (fer_batch.temporal), the belief carried from batch to batch too.
"""

from __future__ import annotations

import numpy as np
import torch

from fer_batch import defaults
from fer_batch.model import Checkpoint
from fer_batch.preprocess import normalize_crops
from fer_batch.runtime import bucket_size
from fer_batch.temporal import check_mode, forward_filter, track_probabilities

TrackKey = tuple[int, int]  # (source number in the run, track id)


class SequenceClassifier:
    def __init__(self, checkpoint: Checkpoint, device: torch.device, temporal: str = defaults.TEMPORAL) -> None:
        self.checkpoint = checkpoint
        self.device = device
        self.model = checkpoint.model.to(device).eval()
        self.preprocessing = checkpoint.preprocessing
        self.temporal = check_mode(temporal)
        self._hidden: dict[TrackKey, torch.Tensor] = {}
        self._belief: dict[TrackKey, tuple[np.ndarray, int]] = {}  # the temporal filter's, per track

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.checkpoint.class_names

    @torch.no_grad()
    def classify(self, crops: np.ndarray, source_numbers: np.ndarray, frame_index: np.ndarray, track_id: np.ndarray) -> np.ndarray:
        """Probabilities (N, C) float32 of (N, H, W) uint8 crops given in time order.

        Consecutive crops of one frame (same source number and frame index) advance their
        tracks' GRU states together.
        """
        if len(crops) == 0:
            return np.empty((0, len(self.class_names)), dtype=np.float32)
        return self.step(self._encode(crops), source_numbers, frame_index, track_id)

    def step(self, features: torch.Tensor, source_numbers: np.ndarray, frame_index: np.ndarray, track_id: np.ndarray) -> np.ndarray:
        """Probabilities (N, C) of (N, D) features in time order (see `step_with_evidence`)."""
        return self.step_with_evidence(features, source_numbers, frame_index, track_id)[0]

    @torch.no_grad()
    def step_with_evidence(
        self, features: torch.Tensor, source_numbers: np.ndarray, frame_index: np.ndarray, track_id: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, evidence), each (N, C), of (N, D) features in time order. Under
        `temporal="none"` both are the frame head's; else the evidence is each track's GRU
        advanced one step per frame, and the probabilities that evidence filtered forward
        (fer_batch.temporal), each track carrying its belief from batch to batch."""
        if self.temporal == "none":
            frame = torch.softmax(self.model.frame_logits(features).float(), dim=1).cpu().numpy().astype(np.float32)
            return frame, frame
        evidence = self._gru_steps(features, source_numbers, frame_index, track_id)
        filtered = np.empty_like(evidence)
        for row, key in enumerate(zip(source_numbers.tolist(), track_id.tolist())):
            belief = forward_filter(evidence[row : row + 1], frame_index[row : row + 1], previous=self._belief.get(key))[0]
            self._belief[key] = (belief, int(frame_index[row]))
            filtered[row] = belief
        return filtered, evidence

    def _gru_steps(self, features: torch.Tensor, source_numbers: np.ndarray, frame_index: np.ndarray, track_id: np.ndarray) -> np.ndarray:
        count = len(features)
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

    def track_probabilities(self, features: np.ndarray, frame_index: np.ndarray | None = None) -> np.ndarray:
        """Probabilities (T, C) of one whole track's features (T, D) in frame order, from a zero
        state, in this classifier's temporal mode: what the streaming pipeline gives that track."""
        if len(features) == 0:
            return np.empty((0, len(self.class_names)), np.float32)
        frames = np.arange(len(features)) if frame_index is None else frame_index
        return track_probabilities(self.model, features, frames, self.temporal).astype(np.float32)

    def forget_source(self, source_number: int) -> None:
        """Drop the GRU state of a finished source (tracker state resets per video too)."""
        for key in [key for key in self._hidden if key[0] == source_number]:
            del self._hidden[key]
        for key in [key for key in self._belief if key[0] == source_number]:
            del self._belief[key]


def classifiers_by_media_type(
    checkpoints: dict[str, Checkpoint], device: torch.device, temporal: str = defaults.TEMPORAL
) -> dict[str, SequenceClassifier]:
    """A fresh classifier per media type for one run, shared where one checkpoint serves both."""
    made: dict[int, SequenceClassifier] = {}
    for checkpoint in checkpoints.values():
        made.setdefault(id(checkpoint), SequenceClassifier(checkpoint, device, temporal))
    return {media_type: made[id(checkpoint)] for media_type, checkpoint in checkpoints.items()}
