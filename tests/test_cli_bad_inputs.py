"""`fer annotate` through Typer's runner: a folder mixing good and bad files, and usage errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fer_batch.cli import app
from tests.test_media import write_video

runner = CliRunner()


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, media_dir) -> Path:
    folder = tmp_path_factory.mktemp("mixed")
    (folder / "videos").mkdir()
    shutil.copy(media_dir / "group-six-faces.jpg", folder / "Group.JPG")
    shutil.copy(media_dir / "portrait-paul_rudd.jpg", folder / "portrait.jpeg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image")
    (folder / "videos" / "text.mp4").write_text("this is not a video")
    crowd = (media_dir / "walking-crowd-1080p.mp4").read_bytes()
    (folder / "videos" / "truncated.mp4").write_bytes(crowd[: len(crowd) // 3])
    cut = write_video(folder / "videos" / "cut.avi", frames=30, fourcc="MJPG")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    noise = np.random.default_rng(0)
    path = folder / "videos" / "no_faces.mp4"
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for _ in range(6):
        writer.write(noise.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    writer.release()
    return folder


EXPECTED_ERRORS = {
    "empty.jpg": "read",
    "text.jpg": "decode",
    "videos/text.mp4": "decode",
    "videos/truncated.mp4": "decode",
    "videos/cut.avi": "decode",
    "videos/no_faces.mp4": "detect",
}


def test_bad_files_become_error_rows_and_good_files_rows(tmp_path, mixed_folder, shipped_weights):
    out = tmp_path / "results.parquet"
    result = runner.invoke(app, ["annotate", str(mixed_folder), "--out", str(out), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    faces = pd.read_parquet(out)
    assert faces.groupby("source").size().to_dict() == {"Group.JPG": 6, "portrait.jpeg": 1}
    errors = pd.read_parquet(tmp_path / "results.errors.parquet")
    assert dict(zip(errors.source, errors.stage)) == EXPECTED_ERRORS
    assert "ended early" in errors.set_index("source").loc["videos/cut.avi", "message"]
    assert "0 bytes" in errors.set_index("source").loc["empty.jpg", "message"]
    summary = pd.read_parquet(tmp_path / "results.summary.parquet").set_index("source")
    assert summary.loc["videos/cut.avi", "frames_read"] > 0  # frames before the cut were still read
    assert summary.loc["videos/no_faces.mp4", "frames_annotated"] == 6
    assert summary.loc["empty.jpg", "status"] == "error" and summary.loc["Group.JPG", "status"] == "ok"
    assert summary.errors.sum() == len(errors)
    assert not list(tmp_path.glob(".*partial*"))  # temporary files were renamed or removed


def test_permission_denied_file_is_an_error_row(tmp_path, media_dir, shipped_weights, monkeypatch):
    """A file the user may not read. Root reads every file whatever its mode, so under root the
    operating system's refusal is reproduced by making `open` raise PermissionError for that file."""
    shutil.copy(media_dir / "group-six-faces.jpg", tmp_path / "ok.jpg")
    locked = tmp_path / "locked.jpg"
    shutil.copy(media_dir / "portrait-paul_rudd.jpg", locked)
    os.chmod(locked, 0o000)
    if os.geteuid() == 0:
        import builtins

        import fer_batch.media

        def refusing_open(file, *args, **kwargs):
            if Path(file) == locked:
                raise PermissionError(13, "Permission denied", str(file))
            return builtins.open(file, *args, **kwargs)

        monkeypatch.setattr(fer_batch.media, "open", refusing_open, raising=False)
    out = tmp_path / "out" / "r.csv"
    result = runner.invoke(app, ["annotate", str(tmp_path), "--out", str(out), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    errors = pd.read_csv(tmp_path / "out" / "r.errors.csv")
    assert errors.to_dict("records") == [
        {"source": "locked.jpg", "stage": "read", "message": "permission denied: Permission denied"}
    ]
    assert len(pd.read_csv(out)) == 6


def test_missing_input_path_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["annotate", str(tmp_path / "nope"), "--out", str(tmp_path / "r.parquet")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "nope" in result.output
    assert not (tmp_path / "r.parquet").exists()


def test_unsupported_output_extension_is_a_usage_error(tmp_path, media_dir):
    result = runner.invoke(app, ["annotate", str(media_dir / "group-six-faces.jpg"), "--out", str(tmp_path / "r.xlsx")])
    assert result.exit_code == 2 and ".xlsx" in result.output


def test_nothing_processable_exits_non_zero(tmp_path, shipped_weights):
    (tmp_path / "broken.jpg").write_text("nope")
    out = tmp_path / "r.csv"
    result = runner.invoke(app, ["annotate", str(tmp_path / "broken.jpg"), "--out", str(out), "--quiet"])
    assert result.exit_code == 1
    assert pd.read_csv(tmp_path / "r.errors.csv").stage.tolist() == ["decode"]


@pytest.mark.parametrize("flag", ["--weights", "--video-weights"])
def test_bad_weights_file_is_a_clear_usage_error(tmp_path, media_dir, flag):
    weights = tmp_path / "weights.pt"
    weights.write_text("not a checkpoint")
    for bad in (weights, tmp_path / "missing.pt"):
        result = runner.invoke(
            app, ["annotate", str(media_dir / "group-six-faces.jpg"), "--out", str(tmp_path / "r.csv"), flag, str(bad)]
        )
        assert result.exit_code == 2 and bad.name in result.output
        assert not (tmp_path / "r.csv").exists()


def test_a_fifo_named_like_a_video_does_not_hang_the_run(tmp_path, media_dir, shipped_weights):
    """Opening a FIFO blocks until someone writes to it: the run must skip it, say why, and finish."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(media_dir / "group-six-faces.jpg", folder / "group.jpg")
    os.mkfifo(folder / "clip.mp4")
    out = tmp_path / "r.csv"
    completed = subprocess.run(
        [sys.executable, "-m", "fer_batch.cli", "annotate", str(folder), "--out", str(out), "--device", "cpu", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert len(pd.read_csv(out)) == 6
    errors = pd.read_csv(tmp_path / "r.errors.csv")
    assert errors.to_dict("records") == [
        {"source": "clip.mp4", "stage": "input", "message": "not a regular file but a FIFO (named pipe); skipped"}
    ]


def test_piped_summary_keeps_names_whole_and_json_goes_to_stdout(tmp_path, media_dir):
    """Piped, the summary is plain lines (no 80-column table folding names), counts read '1 source',
    and --json prints the summary document alone on stdout."""
    name = "a very long file name, with commas and ünïcode – the group photo.jpg"
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(media_dir / "group-six-faces.jpg", folder / name)
    out = tmp_path / "out" / "r.parquet"
    finished = subprocess.run(
        [sys.executable, "-m", "fer_batch.cli", "annotate", str(folder), "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert finished.returncode == 0, finished.stderr
    document = json.loads(finished.stdout)
    assert document["totals"]["sources"] == 1 and document["totals"]["faces"] == 6
    assert [row["source"] for row in document["sources"]] == [name]
    assert document["outputs"]["faces"] == str(out) and pd.read_parquet(out).shape[0] == 6
    lines = finished.stderr.splitlines()
    assert sum(line.startswith(name + "\t") for line in lines) == 1 + 6  # the source row and its six tracks
    assert any(line.startswith("1 file found = 1 annotated + 0 failed + 0 skipped; 1 source (1 ok), "
                               "1 frame annotated of 1 read, 6 faces in 6 tracks, 0 errors")
               for line in lines)
    assert any(line.startswith("wrote 6 rows to ") and line.endswith("errors r.errors.parquet") for line in lines)
