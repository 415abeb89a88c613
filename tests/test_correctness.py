"""Guards on the emotions themselves, through the annotate path with the shipped weights: a
preprocessing slip (wrong normalisation, channels swapped, misaligned crops) fails here."""

from __future__ import annotations

import numpy as np

from fer_batch.classifier import SequenceClassifier
from fer_batch.labels import EMOTIONS

SAMPLE = 500
SAMPLE_SEED = 2026
# The shipped network scores 72.1 % on all of PublicTest (model card) and 73.4 % on this fixed
# sample of 500 (2026-11-26). Preprocessing slips tried once on the same sample: no mean subtracted
# 71.2 %, contrast halved 71.4 %, no /255 13.4 %, crops upside down 18.8 %, inverted 29.6 %. The
# network shrugs off the first two by little more than a point, so the bound sits just under 73.4 %:
# it leaves about 4 answers of 500 for rounding differences between CPUs and catches all five slips.
MINIMUM_ACCURACY = 0.724


def test_the_smiling_faces_of_the_group_photo_are_happy(media_dir, annotator):
    from fer_batch.api import annotate

    faces = annotate([media_dir / "group-six-faces.jpg"], annotator=annotator).sort_values("x1")
    assert len(faces) == 6
    # Left to right: the four smiling people, and the two who do not smile (hand on chin, far right).
    labels = faces.emotion.tolist()
    assert [labels[i] for i in (0, 2, 3, 4)] == ["happy"] * 4
    assert labels[1] != "happy" and labels[5] != "happy"


def test_a_fixed_publictest_sample_scores_near_the_model_card(fer_dir, annotator):
    """PublicTest crops as they are (no detection) through annotate's classifier, each a sequence of one."""
    from fer_batch.training.data import load_split

    test = load_split(fer_dir, "test")
    rows = np.sort(np.random.default_rng(SAMPLE_SEED).choice(len(test), SAMPLE, replace=False))
    classifier = SequenceClassifier(annotator.checkpoint, annotator.device)
    numbers = np.arange(SAMPLE)  # every crop its own source: no GRU state is shared
    probabilities = classifier.classify(test.images[rows], numbers, np.zeros(SAMPLE, np.int64), np.ones(SAMPLE, np.int32))
    assert annotator.class_names == EMOTIONS
    accuracy = float((probabilities.argmax(1) == test.labels[rows]).mean())
    assert accuracy >= MINIMUM_ACCURACY, f"accuracy {accuracy:.3f} on the fixed sample"
    print(f"fixed-sample accuracy {accuracy:.4f}")
