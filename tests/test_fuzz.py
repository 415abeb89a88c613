"""One run over a generated corpus of hostile inputs: it finishes, prints no traceback, and
accounts for every file with rows, an error in a user's words, or a reason it was skipped."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from fer_batch.results import read_run
from tests.fuzz_corpus import build_corpus

# Internal exception texts that must never reach a user's errors table.
INTERNAL_MARKERS = ("Traceback", "torch.", "Tensor", "NoneType", "object has no attribute", "index out of",
                    "cv2.error", "Assertion", "!_src.empty()", "KeyError", "expected a non-empty list")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, media_dir):
    folder = tmp_path_factory.mktemp("fuzz") / "corpus"
    expected = build_corpus(folder, media_dir)
    assert len(expected) >= 150
    return folder, expected


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """The corpus annotated once to Parquet and once to CSV, each in its own process."""
    folder, _ = corpus
    out = tmp_path_factory.mktemp("fuzz-out")
    finished = {}
    for name in ("r.parquet", "r.csv"):
        finished[name] = subprocess.run(
            [sys.executable, "-m", "fer_batch.cli", "annotate", str(folder), "--out", str(out / name), "--device", "cpu"],
            capture_output=True, text=True, timeout=900,  # a hang fails here instead of stalling CI
        )
    return out, finished


def test_the_run_finishes_cleanly_and_accounts_for_every_file(corpus, runs):
    _, expected = corpus
    out, finished = runs
    for name, result in finished.items():
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        tables = read_run(out / name)
        processed = set(tables.sources.source)
        skipped = set(tables.errors.source[tables.errors.stage == "input"])
        assert not processed & skipped
        missing = expected - processed - skipped
        assert not missing, f"files neither processed nor skipped: {sorted(missing)}"
        assert "looks-like.mp4/inside.jpg" in processed  # a folder named like a video is walked
        totals = tables.sources.status.value_counts()
        found, failed = len(processed) + len(skipped), int(totals.get("error", 0))
        line = f"{found} files found = {found - len(skipped) - failed} annotated + {failed} failed + {len(skipped)} skipped"
        assert line in result.stderr


def test_errors_name_the_cause_in_a_users_words(runs):
    out, _ = runs
    errors = read_run(out / "r.parquet").errors
    assert len(errors) > 50
    leaked = errors[errors.message.apply(lambda message: any(marker in message for marker in INTERNAL_MARKERS))]
    assert leaked.empty, leaked.to_dict("records")
    by_source = dict(zip(errors.source, errors.message))
    assert "decompression bomb" in by_source["sizes/bomb.png"]
    assert "FIFO" in by_source["links/pipe.mp4"]
    assert "empty file" in by_source["empty/zero.jpg"]
    assert "unsupported format '.HEIC'" in by_source["phone/IMG_0001.HEIC"]
    assert by_source["sizes/tiny-1x1.png"] == "no face detected in image"


def test_awkward_names_and_rows_survive_csv(runs):
    out, _ = runs
    parquet, csv = read_run(out / "r.parquet"), read_run(out / "r.csv")
    key = ["source", "frame_index", "track_id"]
    left = parquet.faces.sort_values(key).reset_index(drop=True)
    right = csv.faces.sort_values(key).reset_index(drop=True)
    assert left.source.tolist() == right.source.tolist()
    assert {"names/tab\there.jpg", "names/new\nline.jpg", 'names/quote"double.jpg', "names/comma,name.jpg"} <= set(left.source)
    assert np.allclose(left.prob_happy, right.prob_happy, atol=1e-6)
    assert sorted(parquet.errors.source) == sorted(csv.errors.source)
    large = parquet.sources.set_index("source").loc["sizes/large-12000x8000.jpg"]
    assert large.status == "ok" and large.faces >= 1  # detected at a bounded working size


def test_a_full_disk_is_a_clear_error_that_leaves_no_file(tmp_path, media_dir):
    """Writes beyond a file size limit fail like a full disk: exit 3, the cause named, no traceback,
    and nothing under the final name or as a stray temporary file."""
    import resource
    import shutil

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    shutil.copy(media_dir / "group-six-faces.jpg", folder / "group.jpg")

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    finished = subprocess.run(
        [sys.executable, "-m", "fer_batch.cli", "annotate", str(folder), "--out", str(out / "r.parquet"), "--device", "cpu"],
        capture_output=True, text=True, timeout=300, preexec_fn=small_files,
    )
    assert finished.returncode == 3, finished.stderr[-2000:]
    assert "Traceback" not in finished.stderr
    assert "could not write the output" in finished.stderr and "File too large" in finished.stderr
    assert list(out.iterdir()) == []


def test_a_file_deleted_after_discovery_is_an_error_row(tmp_path, media_dir, annotator):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(media_dir / "group-six-faces.jpg", folder / name)
    run = annotator.run([folder])  # discovers both files; reading starts when iterated
    (folder / "b.jpg").unlink()
    faces = sum(len(batch) for batch in run)
    summary = run.summary()
    assert faces == 6
    assert summary.errors.source.tolist() == ["b.jpg"] and "No such file" in summary.errors.message.iloc[0]
    assert summary.totals["files_found"] == 2 and summary.totals["files_failed"] == 1


@pytest.mark.parametrize("out", ["/proc/fer-batch-test/r.parquet", "/proc/r.csv", "/proc/fer-batch-test/"])
def test_an_output_folder_that_cannot_be_written_is_an_error_before_any_work(out, tmp_path):
    """/proc takes no new files, even from root: the probe write fails at once, with exit code 2."""
    from typer.testing import CliRunner

    from fer_batch.cli import app

    (tmp_path / "photo.jpg").write_bytes(b"never read")
    result = CliRunner().invoke(app, ["annotate", str(tmp_path), "--out", out, "--device", "cpu"])
    assert result.exit_code == 2
    assert "is not writable" in " ".join(result.output.split())


def test_the_next_run_removes_temporaries_of_killed_runs_only(tmp_path, media_dir, annotator):
    """Output appears under its final name only by a rename at the end, so a run killed with -9
    leaves nothing there, only hidden `.NAME.partial-PID` files. The next run to the same name
    removes those whose process is gone and leaves those of a live run alone."""
    import os

    from fer_batch.api import annotate_to_file

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    shutil.copy(media_dir / "group-six-faces.jpg", folder / "group.jpg")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # its process id is gone once it has exited
    dead.wait()
    stale = [out / f".r.parquet.partial-{dead.pid}", out / f".r.summary.parquet.partial-{dead.pid}"]
    live = out / f".r.parquet.partial-{os.getppid()}"  # the process that started pytest is running
    for path in (*stale, live):
        path.write_bytes(b"half a file")
    annotate_to_file([folder], out / "r.parquet", annotator=annotator)
    assert (out / "r.parquet").is_file()
    assert not any(path.exists() for path in stale)
    assert live.exists()


def test_variable_frame_rate_timestamps_come_from_the_container(tmp_path):
    """Frames 10, 30 and 70 ms apart keep those times (not index / fps), in increasing order."""
    import av

    from fer_batch.media import MediaSource, VideoReadReport, iter_video_frames
    from fer_batch.options import RunOptions
    from tests.fuzz_corpus import _variable_rate_mp4

    video = tmp_path / "variable-rate.mp4"
    assert _variable_rate_mp4(video)
    with av.open(str(video)) as container:
        expected = [float(frame.pts * frame.time_base) for frame in container.decode(video=0)]
    source = MediaSource(video, video.name, "video")
    times = [frame.timestamp_s for frame in iter_video_frames(source, RunOptions(), VideoReadReport())]
    assert len(times) == len(expected) == 24
    assert np.allclose(times, expected, atol=1e-3)
    assert np.all(np.diff(times) > 0) and len(set(np.round(np.diff(times), 3))) == 3


def test_a_video_with_rotation_metadata_is_annotated_upright(tmp_path, media_dir, annotator):
    """A phone-style video (frames stored sideways, turned by the container's display matrix):
    faces are found as in the upright picture, and boxes and frame sizes are in the displayed
    orientation."""
    from PIL import Image

    from fer_batch.api import annotate
    from tests.fuzz_corpus import rotated_mp4

    with Image.open(media_dir / "group-six-faces.jpg") as photo:
        upright = np.asarray(photo.convert("RGB").resize((480, 252)))
    video = rotated_mp4(tmp_path / "portrait.mp4", [upright] * 3)
    Image.fromarray(upright).save(tmp_path / "upright.png")
    faces = annotate([video], annotator=annotator)
    still = annotate([tmp_path / "upright.png"], annotator=annotator)
    assert len(still) == 6
    assert faces.groupby("frame_index").size().tolist() == [6, 6, 6]
    assert set(faces.frame_width) == {480} and set(faces.frame_height) == {252}
    first = faces[faces.frame_index == 0].sort_values("x1")
    assert np.allclose(first[["x1", "y1", "x2", "y2"]].to_numpy(), still.sort_values("x1")[["x1", "y1", "x2", "y2"]].to_numpy(), atol=3)
