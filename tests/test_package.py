"""The default weights are package data: a wheel carries them and a plain (not editable) install annotates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

from tests.conftest import REPO


def test_wheel_carries_the_checkpoint_and_a_plain_install_annotates(tmp_path, media_dir):
    # Build from a copy: setuptools writes build/ and egg-info folders into the tree it builds.
    tree = tmp_path / "tree"
    shutil.copytree(REPO, tree, ignore=shutil.ignore_patterns(".git", ".venv", "build", "out", "runs", "*.egg-info", "__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(tree)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("fer_batch-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "fer_batch/weights/fer-cnn-gru.pt" in names and "fer_batch/weights/README.md" in names
    shipped = zipfile.ZipFile(wheel).read("fer_batch/weights/fer-cnn-gru.pt")
    assert shipped == (REPO / "fer_batch" / "weights" / "fer-cnn-gru.pt").read_bytes()

    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    # Run from an empty folder with the installed copy first on the path, not the repository's.
    environment = {**os.environ, "PYTHONPATH": str(site)}
    out = tmp_path / "work" / "faces.csv"
    out.parent.mkdir()
    script = (
        "import sys, fer_batch, fer_batch.defaults as d; "
        f"assert fer_batch.__file__.startswith({str(site)!r}), fer_batch.__file__; "
        "assert d.default_weights_path().is_file(); "
        "from fer_batch.cli import main; sys.argv = ['fer'] + sys.argv[1:]; main()"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, "annotate", str(media_dir / "group-six-faces.jpg"), "--out", str(out),
         "--device", "cpu", "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=out.parent, env=environment,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(out.read_text().splitlines()) == 1 + 6  # header and the six faces of the group photo
