"""The temporal stage: how a track's per-frame outputs become its emotion probabilities.

    none           the frame head alone: the CNN, with the same weights
    causal         the CNN-GRU's per-frame probabilities, filtered forward in time
    bidirectional  the same, smoothed forward and backward: a batch tool has the frames
                   ahead of a face before it writes, so it may look at them too

Filtering and smoothing treat a track's emotion as a hidden state that stays from one video
frame to the next with probability `stay` and otherwise moves to any other emotion alike (a
"sticky" hidden Markov model), and the CNN-GRU's per-frame probabilities as its evidence:
`causal` is the forward algorithm (each face sees the faces before it), `bidirectional` the
forward-backward algorithm (each face also sees the faces after it), so a one-frame flicker
is outvoted by its neighbours while a lasting change wins within a frame or two. Gaps in a
track (frames not annotated or missed) count as that many steps. The one parameter, `stay`,
was chosen on synthetic clips made from FER2013 PublicTest faces (`fer evaluate`).

The backward pass looks ahead in bounded windows, so memory does not grow with a track's
length: a face at video frame f belongs to window k = f // window, and its backward message
starts at the track's last face at or before frame (k + 2) * window - 1 (one to two windows
ahead) and runs back to it. Windows are in video frames, so the look-ahead is a span of
time whatever the sampling. The streaming pipeline (`fer_batch.pipeline.look_ahead`) and the
Ray engine (`track_probabilities`) compute the same numbers. A still image is a sequence of
one: `causal` and `bidirectional` give it the CNN-GRU's single step unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from fer_batch import defaults

TEMPORAL_MODES = ("bidirectional", "causal", "none")


def check_mode(mode: str) -> str:
    if mode not in TEMPORAL_MODES:
        raise ValueError(f"temporal must be one of {', '.join(TEMPORAL_MODES)}, got {mode!r}")
    return mode


def look_ahead_end(frame_index: int, window: int = defaults.TEMPORAL_WINDOW) -> int:
    """The last video frame whose faces the backward pass of a face at `frame_index` reads."""
    return (frame_index // window + 2) * window - 1


def _carry(belief: np.ndarray, gap: int, stay: float) -> np.ndarray:
    """A belief (C,) after `gap` frames of the sticky chain: T^gap = 1/C + lambda^gap (I - 1/C)."""
    classes = belief.shape[-1]
    decay = (stay - (1.0 - stay) / (classes - 1)) ** max(gap, 0)
    return decay * belief + (1.0 - decay) * belief.sum(axis=-1, keepdims=True) / classes


def forward_filter(
    evidence: np.ndarray, frame_index: np.ndarray, stay: float = defaults.TEMPORAL_STAY,
    previous: tuple[np.ndarray, int] | None = None,
) -> np.ndarray:
    """Filtered probabilities (T, C) of one track's per-frame probabilities (T, C) in frame order,
    continuing from `previous` = (its last filtered belief, that face's frame) if given."""
    beliefs = np.empty_like(evidence, dtype=np.float64)
    belief, last = previous if previous is not None else (None, None)
    for row, (probabilities, frame) in enumerate(zip(evidence.astype(np.float64), frame_index)):
        predicted = probabilities if belief is None else _carry(belief, int(frame) - int(last), stay) * probabilities
        belief, last = predicted / max(predicted.sum(), 1e-300), frame
        beliefs[row] = belief
    return beliefs


def backward_messages(evidence: np.ndarray, frame_index: np.ndarray, stay: float = defaults.TEMPORAL_STAY) -> np.ndarray:
    """Backward messages (T, C) of one track's per-frame probabilities, from its last face (all ones) back."""
    messages = np.ones_like(evidence, dtype=np.float64)
    for row in range(len(evidence) - 2, -1, -1):
        message = _carry(evidence[row + 1].astype(np.float64) * messages[row + 1], int(frame_index[row + 1]) - int(frame_index[row]), stay)
        messages[row] = message / max(message.sum(), 1e-300)
    return messages


def backward_for(evidence: np.ndarray, frame_index: np.ndarray, targets: np.ndarray,
                 window: int = defaults.TEMPORAL_WINDOW, stay: float = defaults.TEMPORAL_STAY) -> np.ndarray:
    """Backward messages for the faces at `targets` of one track (arrays in frame order, holding each
    target's look-ahead), each from its own look-ahead end."""
    result = np.empty((len(targets), evidence.shape[1]), np.float64)
    frame_index = np.asarray(frame_index)
    for end in np.unique([look_ahead_end(int(frame_index[t]), window) for t in targets]):
        rows = np.flatnonzero(frame_index <= end)
        mine = [position for position, t in enumerate(targets) if look_ahead_end(int(frame_index[t]), window) == end]
        first = int(targets[mine].min())
        span = rows[rows >= first]
        messages = backward_messages(evidence[span], frame_index[span], stay)
        for position in mine:
            result[position] = messages[int(np.flatnonzero(span == targets[position])[0])]
    return result


def smooth(filtered: np.ndarray, backward: np.ndarray) -> np.ndarray:
    posterior = filtered * backward
    return posterior / np.maximum(posterior.sum(axis=-1, keepdims=True), 1e-300)


def filter_track(evidence: np.ndarray, frame_index: np.ndarray, mode: str,
                 window: int = defaults.TEMPORAL_WINDOW, stay: float = defaults.TEMPORAL_STAY) -> np.ndarray:
    """(T, C) probabilities of one whole track's CNN-GRU evidence (T, C) in frame order, in the
    `causal` or `bidirectional` mode."""
    filtered = forward_filter(evidence, frame_index, stay)
    if mode == "causal":
        return filtered
    return smooth(filtered, backward_for(evidence, frame_index, np.arange(len(evidence)), window, stay))


@torch.no_grad()
def track_probabilities(
    model: torch.nn.Module, features: np.ndarray, frame_index: np.ndarray, mode: str,
    window: int = defaults.TEMPORAL_WINDOW, stay: float = defaults.TEMPORAL_STAY,
) -> np.ndarray:
    """(T, C) probabilities of one whole track's (T, D) CNN features in frame order, in `mode`."""
    device = next(model.parameters()).device
    sequence = torch.from_numpy(np.ascontiguousarray(features, np.float32)).to(device)
    if mode == "none":
        return torch.softmax(model.frame_logits(sequence).float(), dim=-1).cpu().numpy()
    logits, _ = model.sequence_logits(sequence.unsqueeze(0))
    evidence = torch.softmax(logits[0].float(), dim=-1).cpu().numpy()
    return filter_track(evidence, frame_index, mode, window, stay).astype(np.float32)
