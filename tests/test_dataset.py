"""Dataset output (a folder of Parquet parts) and --resume after SIGTERM and kill -9, on real media."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from fer_batch.cli import app
from fer_batch.dataset import read_part_document
from fer_batch.report import plural
from fer_batch.results import read_run

KEY = ["source", "frame_index", "track_id"]
runner = CliRunner()
# The detector on every frame: a clip then takes long enough (about a second) that a kill sent
# when one part appears lands before the next (with the CPU default, every fifth frame, it need not).
SLOW_ENOUGH = ("--detect-every", "1")


def _crowd_clip(source: Path, target: Path, start: int, frames: int) -> Path:
    """`frames` frames of the shared crowd clip from `start`, at 640x360."""
    capture = cv2.VideoCapture(str(source))
    capture.set(cv2.CAP_PROP_POS_FRAMES, start)
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (640, 360))
    for _ in range(frames):
        ok, bgr = capture.read()
        assert ok
        writer.write(cv2.resize(bgr, (640, 360), interpolation=cv2.INTER_AREA))
    writer.release()
    capture.release()
    return target


@pytest.fixture(scope="module")
def media_folder(tmp_path_factory, media_dir) -> Path:
    """Three short crowd clips with photos between them (sorted: clip, photo, clip, photo, clip),
    so the run writes several parts and a kill can land between them."""
    folder = tmp_path_factory.mktemp("dataset-media")
    crowd = media_dir / "walking-crowd-1080p.mp4"
    _crowd_clip(crowd, folder / "a-clip.mp4", 0, 12)
    shutil.copy(media_dir / "group-six-faces.jpg", folder / "b-group.jpg")
    _crowd_clip(crowd, folder / "c-clip.mp4", 40, 12)
    (folder / "d-notes.jpg").write_text("not an image")
    _crowd_clip(crowd, folder / "e-clip.mp4", 80, 12)
    return folder


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, media_folder, annotator):
    """The folder annotated in one go, as a dataset and as one Parquet file."""
    from fer_batch.api import annotate_to_file

    out = tmp_path_factory.mktemp("uninterrupted")
    dataset = annotate_to_file([media_folder], out / "results/", annotator=annotator, detect_every=1)  # as SLOW_ENOUGH
    single = annotate_to_file([media_folder], out / "single.parquet", annotator=annotator, detect_every=1)
    return dataset, single


def _sorted(frame: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    return frame.sort_values(key).reset_index(drop=True)


def _assert_same_rows(actual: pd.DataFrame, expected: pd.DataFrame, key: list[str] = KEY) -> None:
    """Same rows, same values; floats (probabilities) to 1e-4."""
    actual, expected = _sorted(actual, key), _sorted(expected, key)
    assert list(actual.columns) == list(expected.columns)
    assert len(actual) == len(expected) > 0
    for column in expected.columns:
        if expected[column].dtype.kind == "f":
            assert np.allclose(actual[column], expected[column], atol=1e-4, rtol=0), column
        else:
            assert actual[column].tolist() == expected[column].tolist(), column


def test_a_dataset_folder_reads_as_one_table_equal_to_the_single_file(uninterrupted):
    dataset, single = uninterrupted
    folder = dataset.directory
    parts = sorted(path.name for path in folder.glob("part-*.parquet"))
    # Each clip ends its part; the photo and the broken file wait for the next clip.
    assert parts == ["part-00001.parquet", "part-00002.parquet", "part-00003.parquet"]
    assert {path.name for path in folder.iterdir()} == {
        *parts, "_summary.parquet", "_tracks.parquet", "_errors.parquet", "_run.json"
    }
    expected = pd.read_parquet(single.out_path)
    from_pandas = pd.read_parquet(folder)
    assert dict(from_pandas.dtypes) == dict(expected.dtypes)
    _assert_same_rows(from_pandas, expected)
    assert ds.dataset(folder, format="parquet").count_rows() == len(expected)
    tables = read_run(folder)
    _assert_same_rows(tables.faces, expected)
    single_tables = read_run(single.out_path)
    assert _sorted(tables.sources, ["source"]).equals(_sorted(single_tables.sources, ["source"]))
    _assert_same_rows(tables.tracks, single_tables.tracks, ["source", "track_id"])  # means summed in another order
    assert tables.errors.to_dict("records") == single_tables.errors.to_dict("records")
    assert "d-notes.jpg" in tables.errors.source.tolist()
    assert set(tables.metadata.source_paths) == set(tables.sources.source)


def _start(media_folder: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "fer_batch.cli", "annotate", str(media_folder), "--out", f"{out}/",
               "--device", "cpu", *SLOW_ENOUGH, *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_parts(process: subprocess.Popen, out: Path, count: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while len(list(out.glob("part-*.parquet"))) < count:
        assert process.poll() is None, f"the run ended before {count} part(s): {process.communicate()}"
        assert time.monotonic() < deadline, "no part appeared in time"
        time.sleep(0.02)


def test_sigterm_then_kill_9_then_resume_gives_the_rows_of_an_uninterrupted_run(media_folder, uninterrupted, tmp_path):
    dataset, _ = uninterrupted
    out = tmp_path / "results"

    first = _start(media_folder, out)
    _wait_for_parts(first, out, 1)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    assert "--resume" in stderr
    assert not list(out.glob(".*partial*")), "the part in progress is discarded on SIGTERM"
    assert not (out / "_summary.parquet").exists()

    refused = runner.invoke(app, ["annotate", str(media_folder), "--out", f"{out}/", "--device", "cpu"])
    assert refused.exit_code == 2 and "--resume" in " ".join(refused.output.split())

    second = _start(media_folder, out, "--resume")
    parts_before = len(list(out.glob("part-*.parquet")))
    _wait_for_parts(second, out, parts_before + 1)
    os.kill(second.pid, signal.SIGKILL)
    second.communicate(timeout=60)
    complete = sorted(out.glob("part-*.parquet"))
    assert len(complete) < 3, "the kill landed before the last part"

    third = _start(media_folder, out, "--resume")
    _, stderr = third.communicate(timeout=300)
    assert third.returncode == 0, stderr
    done = sum(len(read_part_document(part)[1].sources) for part in complete)
    assert f"resumed: {plural(done, 'source')} already complete in {out} skipped" in stderr
    assert not list(out.glob(".*partial*")), "the killed run's temporary part is cleaned up"
    resumed = read_run(out)
    expected = read_run(dataset.directory)
    _assert_same_rows(resumed.faces, expected.faces)
    assert _sorted(resumed.sources, ["source"]).equals(_sorted(expected.sources, ["source"]))
    _assert_same_rows(resumed.tracks, expected.tracks, ["source", "track_id"])
    assert sorted(resumed.errors.source) == sorted(expected.errors.source)


def test_resume_refuses_other_options_and_single_files(media_folder, uninterrupted, tmp_path):
    dataset, _ = uninterrupted
    copy = tmp_path / "copy"
    shutil.copytree(dataset.directory, copy)
    other = runner.invoke(app, ["annotate", str(media_folder), "--out", f"{copy}/", "--resume", "--threshold", "0.8"])
    assert other.exit_code == 2 and "other weights or options" in " ".join(other.output.split())
    single = runner.invoke(app, ["annotate", str(media_folder), "--out", str(tmp_path / "r.parquet"), "--resume"])
    assert single.exit_code == 2 and "dataset directory" in " ".join(single.output.split())


def test_a_part_written_before_an_option_existed_counts_it_at_its_default(uninterrupted):
    """Parts of an earlier version lack options added since (as --proposal-threshold); that version
    ran at their defaults, so resuming with the defaults keeps the parts and with others refuses."""
    from dataclasses import replace

    from fer_batch.dataset import _comparable

    dataset, _ = uninterrupted
    metadata, _ = read_part_document(sorted(dataset.directory.glob("part-*.parquet"))[0])
    assert metadata.options["proposal_threshold"] == 0.6
    older = replace(metadata, options={key: value for key, value in metadata.options.items() if key != "proposal_threshold"})
    assert _comparable(older) == _comparable(metadata)
    assert _comparable(replace(metadata, options={**metadata.options, "proposal_threshold": 0.8})) != _comparable(older)


def test_a_source_deleted_mid_run_does_not_stop_a_dataset_run(tmp_path, media_dir, annotator):
    """The part records a deleted file with an identity no file has, so --resume redoes its part."""
    from fer_batch.api import annotate_to_file

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(media_dir / "group-six-faces.jpg", folder / name)

    class DeleteTheSecond:
        def source_started(self, source, number, total, expected_frames):
            pass

        def frames_done(self, count):
            pass

        def source_finished(self, source):
            (folder / "b.jpg").unlink(missing_ok=True)

    result = annotate_to_file([folder], tmp_path / "results/", annotator=annotator, progress=DeleteTheSecond())
    identities = {entry.source: entry for part in sorted(result.directory.glob("part-*.parquet"))
                  for entry in read_part_document(part)[1].identities()}
    assert identities["b.jpg"].size == -1 and identities["a.jpg"].size > 0
    assert set(read_run(result.directory).sources.source) == {"a.jpg", "b.jpg"}


def _looped(clip: Path, target: Path, times: int) -> Path:
    """`clip` played `times` times over, by copying its H.264 packets with shifted timestamps (no re-encoding)."""
    import av

    with av.open(str(clip)) as source, av.open(str(target), "w") as output:
        stream = source.streams.video[0]
        packets = [packet for packet in source.demux(stream) if packet.size]
        copy = output.add_stream_from_template(stream)
        step = packets[1].pts - packets[0].pts
        length = max(packet.pts for packet in packets) + step - packets[0].pts
        for repeat in range(times):
            for packet in packets:
                shifted = av.Packet(bytes(packet))
                shifted.stream, shifted.time_base, shifted.is_keyframe = copy, packet.time_base, packet.is_keyframe
                shifted.pts, shifted.dts = packet.pts + repeat * length, packet.dts + repeat * length
                output.mux(shifted)
    return target


def test_peak_memory_does_not_grow_with_video_length(tmp_path, media_dir):
    """A 640x360 clip looped to 2 and to 20 minutes (30,000 frames, all decoded), each annotated (one
    frame in 500) into a dataset folder by a fresh process: the 20-minute run's peak RSS is the
    2-minute run's, give or take noise."""
    import av

    from fer_batch.render import H264Writer

    capture = cv2.VideoCapture(str(media_dir / "walking-crowd-1080p.mp4"))
    writer = H264Writer(tmp_path / "base.mp4", 25.0, (640, 360))
    for _ in range(50):  # 2 s
        ok, bgr = capture.read()
        assert ok
        writer.write(cv2.cvtColor(cv2.resize(bgr, (640, 360), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    writer.close()
    peaks = {}
    for minutes in (2, 20):
        video = _looped(tmp_path / "base.mp4", tmp_path / f"long-{minutes}.mp4", minutes * 30)
        with av.open(str(video)) as container:
            assert container.streams.video[0].frames == minutes * 60 * 25
        script = (
            "import resource, sys; from fer_batch.api import annotate_to_file; "
            "result = annotate_to_file([sys.argv[1]], sys.argv[2], device='cpu', every_nth=500); "
            "print(result.summary.totals['frames_annotated'], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        done = subprocess.run([sys.executable, "-c", script, str(video), str(tmp_path / f"out-{minutes}") + "/"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        frames, peak_kb = map(int, done.stdout.split()[-2:])
        assert frames == minutes * 60 * 25 // 500
        peaks[minutes] = peak_kb / 1024
        video.unlink()
    assert peaks[20] - peaks[2] < 40, f"peak RSS grew from {peaks[2]:.0f} MB to {peaks[20]:.0f} MB with 10x the video"
