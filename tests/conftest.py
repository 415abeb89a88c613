"""Shared fixtures: the real shared media, the shipped weights, and one annotated run reused by several tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CROWD_FRAMES = 105  # the whole shared crowd clip
GOLDEN = REPO / "tests" / "golden" / "media-all-frames.parquet"


def require_shared(*parts: str) -> Path:
    """A path under ../shared; skip when absent, except under CI=true where absence is a failure."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the shared data is missing: {path}")
        pytest.skip(f"needs {path} (the shared data set beside the repository), which is absent here")
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium; absent, the browser tests skip, except under CI=true where that is a failure."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Chromium is missing (.ci/run installs Debian's chromium)")
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    return browser


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
    from fer_batch.pipeline import Annotator

    return Annotator(device="cpu")


@pytest.fixture(scope="session")
def media_run(tmp_path_factory, media_dir, annotator):
    """`fer annotate ../shared/media` with default options (every frame of the crowd clip), as Parquet:
    the run the golden file was recorded from, shared by the tests that read its output."""
    from fer_batch.api import annotate_to_file

    out = tmp_path_factory.mktemp("media_run") / "results.parquet"
    return annotate_to_file([media_dir], out, annotator=annotator)
