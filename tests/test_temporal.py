"""The temporal stage (fer_batch.temporal): the streaming look-ahead equals the whole-track
computation however a video's faces arrive in batches, stills are untouched, and smoothing
removes a one-frame flicker but follows a lasting change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fer_batch.faces import Faces
from fer_batch.media import MediaSource
from fer_batch.pipeline import FrameBatch, SourceFinished, SourceRun, SourceStarted, look_ahead
from fer_batch.temporal import backward_for, forward_filter, smooth

CLASSES = 7


def _track_arrays(data, tracks: int, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces of several tracks over `frames` video frames, each track on a random subset of them."""
    rows = []
    for track in range(1, tracks + 1):
        present = data.draw(st.lists(st.booleans(), min_size=frames, max_size=frames))
        rows += [(frame, track) for frame, here in enumerate(present) if here]
    rows.sort()
    frame_index = np.array([frame for frame, _ in rows], np.int64)
    track_id = np.array([track for _, track in rows], np.int32)
    logits = np.array(data.draw(st.lists(st.lists(st.floats(-4, 4), min_size=CLASSES, max_size=CLASSES),
                                         min_size=len(rows), max_size=len(rows))), np.float64).reshape(len(rows), CLASSES)
    evidence = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return frame_index, track_id, evidence


@settings(max_examples=150, deadline=None)
@given(data=st.data(), tracks=st.integers(1, 3), frames=st.integers(1, 70), window=st.integers(1, 12),
       batch_frames=st.integers(1, 9))
def test_streaming_look_ahead_equals_the_whole_track(data, tracks, frames, window, batch_frames):
    frame_index, track_id, evidence = _track_arrays(data, tracks, frames)
    filtered = np.empty_like(evidence)
    expected = np.empty_like(evidence)
    for track in np.unique(track_id):
        rows = np.flatnonzero(track_id == track)
        filtered[rows] = forward_filter(evidence[rows], frame_index[rows])
        expected[rows] = smooth(filtered[rows], backward_for(evidence[rows], frame_index[rows], np.arange(len(rows)), window))
    run = SourceRun(0, MediaSource(Path("v.mp4"), "v.mp4", "video"))
    events = [SourceStarted(run)]
    for start in range(0, frames, batch_frames):  # batches of frames, some without faces
        rows = np.flatnonzero((frame_index >= start) & (frame_index < start + batch_frames))
        count = len(rows)
        faces = Faces("v.mp4", "video", frame_index[rows], frame_index[rows] / 25.0, np.zeros((count, 4), np.float32),
                      np.zeros((count, 5, 2), np.float32), np.ones(count, np.float32), np.ones(count, bool),
                      np.full(count, 64, np.int32), np.full(count, 64, np.int32), track_id=track_id[rows],
                      probabilities=filtered[rows].astype(np.float32), evidence=evidence[rows].astype(np.float32))
        events.append(FrameBatch(run, [], min(batch_frames, frames - start), faces=faces))
    events.append(SourceFinished(run))
    out = list(look_ahead(iter(events), window))
    assert [type(event) for event in out] == [type(event) for event in events]  # nothing lost, order kept
    streamed = [event.faces for event in out if isinstance(event, FrameBatch) and len(event.faces)]
    got = np.concatenate([faces.probabilities for faces in streamed]) if streamed else np.empty((0, CLASSES))
    assert np.allclose(got, expected, atol=1e-5)
    assert all(event.faces.evidence is None for event in out if isinstance(event, FrameBatch))


def test_a_one_frame_flicker_is_outvoted_and_a_lasting_change_is_followed():
    steady, other = np.full(CLASSES, 0.02), np.full(CLASSES, 0.02)
    steady[3], other[5] = 0.88, 0.88
    flicker = np.array([steady] * 5 + [other] + [steady] * 5)
    frames = np.arange(len(flicker))
    labels = smooth(forward_filter(flicker, frames), backward_for(flicker, frames, frames)).argmax(1)
    assert (labels == 3).all()
    change = np.array([steady] * 6 + [other] * 6)
    frames = np.arange(len(change))
    labels = smooth(forward_filter(change, frames), backward_for(change, frames, frames)).argmax(1)
    assert labels.tolist() == [3] * 6 + [5] * 6  # no lag either way


def test_without_memory_the_filter_returns_its_evidence():
    rng = np.random.default_rng(0)
    evidence = rng.dirichlet(np.ones(CLASSES), size=9)
    frames = np.arange(9)
    assert np.allclose(forward_filter(evidence, frames, stay=1 / CLASSES), evidence)
    assert np.allclose(smooth(forward_filter(evidence, frames, stay=1 / CLASSES),
                              backward_for(evidence, frames, frames, stay=1 / CLASSES)), evidence)


@pytest.fixture(scope="module")
def modes(media_dir, annotator):
    import fer_batch

    return {mode: fer_batch.annotate([media_dir / "group-six-faces.jpg"], annotator=annotator, temporal=mode)
            for mode in ("none", "causal", "bidirectional")}


def test_stills_are_sequences_of_one_in_every_mode(modes):
    probabilities = {mode: faces.filter(like="prob_").to_numpy() for mode, faces in modes.items()}
    assert np.allclose(probabilities["causal"], probabilities["bidirectional"], atol=1e-6)
    assert not np.allclose(probabilities["none"], probabilities["causal"], atol=1e-4)  # the frame head alone differs
    assert (modes["bidirectional"].emotion == "happy").sum() >= 3


def test_the_mode_is_recorded_and_checked(media_dir, annotator, tmp_path):
    import fer_batch

    result = fer_batch.annotate_to_file([media_dir / "portrait-paul_rudd.jpg"], tmp_path / "r.parquet",
                                        annotator=annotator, temporal="causal")
    assert fer_batch.read_run(result.out_path).metadata.options["temporal"] == "causal"
    with pytest.raises(ValueError, match="temporal"):
        fer_batch.annotate([media_dir], annotator=annotator, temporal="sideways")


@settings(max_examples=40, deadline=None)
@given(data=st.data(), clips=st.integers(1, 4), length=st.integers(1, 12))
def test_the_known_change_reference_answers_once_per_stretch_of_one_true_label(data, clips, length):
    """`fer evaluate`'s reference for what smoothing could gain: one answer per stretch of one true
    label among a clip's found frames (the mean of its probabilities), -1 on padding; where each
    stretch's frames agree, it is their answer."""
    from fer_batch.training.evaluate import known_change_labels

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    truth = np.stack([np.where(np.arange(length) < data.draw(st.integers(1, length)), *rng.choice(7, 2, replace=False))
                      for _ in range(clips)])
    valid = np.arange(length)[None, :] < np.array([data.draw(st.integers(0, length)) for _ in range(clips)])[:, None]
    probabilities = rng.dirichlet(np.ones(7), size=(clips, length))
    labels = known_change_labels(probabilities, truth, valid)
    assert (labels[~valid] == -1).all() and (labels[valid] >= 0).all()
    for row in range(clips):
        found = np.flatnonzero(valid[row])
        for label in np.unique(truth[row, found]):
            stretch = found[truth[row, found] == label]
            assert len(set(labels[row, stretch])) == 1
            assert labels[row, stretch[0]] == probabilities[row, stretch].mean(axis=0).argmax()
    same = probabilities.copy()  # every frame of a stretch alike: the reference is the frames' own answer
    for row in range(clips):
        for label in np.unique(truth[row]):
            same[row, truth[row] == label] = probabilities[row, np.flatnonzero(truth[row] == label)[0]]
    assert (known_change_labels(same, truth, valid)[valid] == same.argmax(-1)[valid]).all()
