"""Shared fixtures: the real shared media, the shipped weights, and one annotated run reused by several tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CROWD_FRAMES = 20


def require_shared(*parts: str) -> Path:
    """A path under ../shared; skip when absent, except under CI=true where absence is a failure."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the shared data is missing: {path}")
        pytest.skip(f"needs {path} (the shared data set beside the repository), which is absent here")
    return path


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return require_shared("media")


@pytest.fixture(scope="session")
def fer_dir() -> Path:
    return require_shared("fer2013")


@pytest.fixture(scope="session")
def shipped_weights() -> Path:
    from fer_batch.defaults import default_weights_path

    path = default_weights_path()
    assert path.is_file(), f"the shipped default weights are missing: {path}"
    return path


@pytest.fixture(scope="session")
def annotator(shipped_weights):
    from fer_batch.api import build_options
    from fer_batch.pipeline import Annotator

    return Annotator(build_options(device="cpu"))


@pytest.fixture(scope="session")
def media_run(tmp_path_factory, media_dir, annotator):
    """The group photo, the four portraits and the first frames of the crowd video, written to Parquet."""
    from fer_batch.api import annotate_to_file
    from fer_batch.media import SamplingConfig

    out = tmp_path_factory.mktemp("media_run") / "results.parquet"
    sampled = annotator.with_options(sampling=SamplingConfig(max_frames=CROWD_FRAMES))
    inputs = [media_dir / "group-six-faces.jpg", *sorted(media_dir.glob("portrait-*.jpg")), media_dir / "walking-crowd-1080p.mp4"]
    return annotate_to_file(inputs, out, annotator=sampled)
