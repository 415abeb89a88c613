"""No behaviour change: `fer annotate ../shared/media` (every frame) gives the recorded rows.

The golden files in tests/golden/ were written by the pipeline as it stood before it was
rebuilt around `Faces` batches (commit "Golden output of fer annotate ..."). A change
that is meant to alter the output (new weights, a new detector) regenerates them with
`fer annotate ../shared/media --out tests/golden/media-all-frames.parquet` and says why.

Regenerated on 2026-11-26 for the new default weights (one network distilled from the
two-network ensemble): the same 574 rows, track ids, boxes and landmarks; the emotion
probabilities are the new network's.

Regenerated again on 2026-11-26 for the new default temporal stage (`--temporal
bidirectional`, fer_batch.temporal): the same 574 rows, track ids and boxes (within 3e-5 px);
the photos' probabilities are unchanged (a still is a sequence of one), the video's are
smoothed forward and backward: 80 % of its labels are as before, and label changes inside
tracks of 30+ frames fell from 23.0 to 2.0 per 100 frames.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.conftest import GOLDEN

KEY = ["source", "frame_index", "track_id"]


def _sorted(frame: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    return frame.sort_values(key).reset_index(drop=True)


def _assert_same_table(actual: pd.DataFrame, expected: pd.DataFrame, key: list[str]) -> None:
    assert list(actual.columns) == list(expected.columns)
    assert dict(actual.dtypes) == dict(expected.dtypes)
    actual, expected = _sorted(actual, key), _sorted(expected, key)
    assert len(actual) == len(expected)
    for column in expected.columns:
        if expected[column].dtype.kind == "f":
            # rtol: a box coordinate of a few hundred pixels may move by one float32 step (3e-5) when
            # a network runs at another batch size; that is rounding, not a change of behaviour.
            assert np.allclose(actual[column], expected[column], atol=1e-5, rtol=1e-6), column
        else:
            assert actual[column].tolist() == expected[column].tolist(), column


def test_faces_tracks_and_summary_equal_the_golden_run(media_run):
    _assert_same_table(pd.read_parquet(media_run.out_path), pd.read_parquet(GOLDEN), KEY)
    golden_tracks = pd.read_parquet(GOLDEN.with_name("media-all-frames.tracks.parquet"))
    _assert_same_table(pd.read_parquet(media_run.tracks_path), golden_tracks, ["source", "track_id"])
    golden_summary = pd.read_parquet(GOLDEN.with_name("media-all-frames.summary.parquet"))
    _assert_same_table(pd.read_parquet(media_run.summary_path), golden_summary, ["source"])
