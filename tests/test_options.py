"""One name per option: the CLI flag, the Python keyword and the config field agree, with one default."""

from __future__ import annotations

import dataclasses

import pytest
import typer

from fer_batch.cli import app
from fer_batch.options import ALL_OPTION_NAMES, ModelOptions, RunOptions, split_options

NOT_OPTIONS = {"paths", "out", "resume", "report", "render", "quiet", "json_summary",  # what to read and write, the terminal
               "engine", "ray_address", "workers", "segment_seconds"}  # and which engine runs it (fer_batch.ray)


def _annotate_params() -> dict:
    command = typer.main.get_command(app).commands["annotate"]
    return {param.name: param for param in command.params if param.name not in NOT_OPTIONS}


def test_cli_flags_are_the_option_fields_with_their_defaults():
    params = _annotate_params()
    assert set(params) == set(ALL_OPTION_NAMES)
    defaults = {**dataclasses.asdict(ModelOptions()), **dataclasses.asdict(RunOptions())}
    for name, param in params.items():
        assert f"--{name.replace('_', '-')}" in param.opts, name
        cli_default = tuple(param.default) if isinstance(param.default, list) else param.default
        assert cli_default == defaults[name], name


def test_a_wrong_option_name_is_a_type_error_that_lists_the_valid_ones():
    with pytest.raises(TypeError) as error:
        split_options({"detection_scale": 0.5})
    assert "'detection_scale'" in str(error.value) and "detect_scale" in str(error.value)
    import fer_batch

    with pytest.raises(TypeError, match="valid options are: device, weights, video_weights, threads, precision, glob"):
        fer_batch.annotate(["nowhere"], target_fps=2)


def test_options_split_into_what_is_loaded_and_what_is_per_run():
    model, run = split_options({"device": "cpu", "threads": 1, "detect_scale": 0.5, "glob": "*.mp4"})
    assert model == {"device": "cpu", "threads": 1}
    assert run == RunOptions(detect_scale=0.5, glob=("*.mp4",))
    with pytest.raises(ValueError, match="detect_scale must be in"):
        RunOptions(detect_scale=0)
    with pytest.raises(ValueError, match="small_faces_every must be at least 1"):
        RunOptions(small_faces_every=0)
    with pytest.raises(ValueError, match="unknown precision 'fp16'; use one of auto, fp32, int8"):
        ModelOptions(precision="fp16")


@pytest.mark.parametrize(("changes", "size", "period"), [
    ({}, 30, 1),  # the CPU defaults: a keyframe every 5th frame, each searching for faces under 30 px
    ({"detect_every": 1}, 30, 5),  # every frame a keyframe: faces under 30 px on every 5th
    ({"min_face_size": 15, "detect_every": 1}, 23, 5),  # 1.5x, rounded up
    ({"detect_every": 2}, 30, 3),  # 5 frames is 2.5 keyframes: every 3rd keyframe
    ({"detect_every": 10}, 30, 1),  # every keyframe
    ({"small_faces_every": 1}, 30, 1),
])
def test_the_small_face_size_and_period_follow_from_the_options(changes, size, period):
    options = RunOptions(**changes).for_device("cpu")
    assert (options.small_face_size, options.small_face_period) == (size, period)


def test_keyframes_detector_batching_and_the_small_face_schedule_default_by_device(media_dir, annotator):
    """Unset, they take the device's defaults (a CPU detects every 5th frame and refines between; a
    GPU waits on the host: every frame, big batches, no schedule); set, they stay; a run records
    what it used. The period needs the device's answer first."""
    from fer_batch import defaults

    unset = RunOptions()
    assert (unset.detect_every, unset.detect_batch, unset.small_faces_every) == (None, None, None)
    with pytest.raises(ValueError, match="for_device"):
        unset.small_face_period  # noqa: B018 - the property raises
    on_cpu, on_gpu = unset.for_device("cpu"), unset.for_device("cuda:1")
    assert (on_cpu.detect_every, on_cpu.detect_batch, on_cpu.small_faces_every) == (
        defaults.DETECT_EVERY["cpu"], defaults.DETECT_BATCH["cpu"], defaults.SMALL_FACES_EVERY["cpu"]) == (5, 2, 5)
    assert (on_gpu.detect_every, on_gpu.detect_batch, on_gpu.small_faces_every) == (
        defaults.DETECT_EVERY["gpu"], defaults.DETECT_BATCH["gpu"], defaults.SMALL_FACES_EVERY["gpu"]) == (1, 32, 1)
    given = RunOptions(detect_every=3, detect_batch=2, small_faces_every=3)
    assert given.for_device("cuda") == given == given.for_device("cpu")
    run = annotator.run([media_dir / "group-six-faces.jpg"])
    list(run)
    options = run.metadata().options
    assert (options["detect_every"], options["detect_batch"], options["small_faces_every"]) == (5, 2, 5)  # what ran, not None


def test_an_annotator_runs_with_other_run_options_but_refuses_other_model_options(media_dir, annotator):
    import fer_batch

    photo = [media_dir / "group-six-faces.jpg"]
    assert len(fer_batch.annotate(photo, annotator=annotator, threshold=0.95, device="cpu")) == 6
    with pytest.raises(ValueError, match="built with device='cpu', not device='cuda'"):
        fer_batch.annotate(photo, annotator=annotator, device="cuda")
    with pytest.raises(ValueError, match="weights"):
        fer_batch.annotate(photo, annotator=annotator, weights="other.pt")


def test_threads_are_applied_to_torch_opencv_and_the_video_decoder(shipped_weights, media_dir):
    import cv2
    import torch

    from fer_batch.media import open_video
    from fer_batch.pipeline import Annotator

    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            annotator = Annotator(device="cpu", threads=threads)
            assert annotator.threads == threads and torch.get_num_threads() == threads and cv2.getNumThreads() == threads
            # two or more threads on a CPU: windows of frames detected side by side, one torch thread each
            assert (annotator.detect_workers, annotator.detect_threads) == ((1, 1) if threads == 1 else (2, 1))
            capture, _ = open_video(media_dir / "walking-crowd-1080p.mp4")
            assert capture.get(cv2.CAP_PROP_N_THREADS) == threads
            capture.release()
    finally:
        from fer_batch.runtime import configure_threads

        configure_threads(before)


@pytest.mark.parametrize(("device", "threads", "expected"), [
    ("cpu", 1, (1, 1)), ("cpu", 2, (2, 1)), ("cpu", 3, (3, 1)), ("cpu", 4, (4, 1)), ("cpu", 8, (4, 2)),
    ("cpu", 10, (4, 2)), ("cuda", 8, (1, 8)), ("cuda", 1, (1, 1)),
])
def test_detection_workers_split_the_threads_on_a_cpu_and_never_on_a_gpu(device, threads, expected):
    import torch

    from fer_batch.runtime import MAX_DETECT_WORKERS, detection_workers

    workers, each = detection_workers(torch.device(device), threads)
    assert (workers, each) == expected
    assert 1 <= workers <= MAX_DETECT_WORKERS and workers * each <= threads


@pytest.mark.parametrize(("threads", "detecting", "per_window", "expected"), [
    (2, 0, 1, 2), (2, 1, 1, 1), (2, 2, 1, 1), (4, 1, 1, 3), (4, 4, 1, 1), (8, 2, 2, 4), (8, 4, 2, 1), (1, 0, 1, 1),
])
def test_the_stages_after_detection_get_the_cores_the_detectors_leave(threads, detecting, per_window, expected):
    from fer_batch.runtime import downstream_threads

    assert downstream_threads(threads, detecting, per_window) == expected


def test_openmp_waits_passively_unless_the_user_chose_otherwise():
    """Spinning OpenMP threads thrash beside another busy process (benchmarks/contention.py measures it)."""
    import os
    import subprocess
    import sys

    script = "import fer_batch, os, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    clean = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}

    def policy(**environment: str) -> str:
        completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                   env={**clean, **environment}, check=True)
        return completed.stdout.strip()

    assert policy() == "PASSIVE"
    assert policy(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE" and policy(GOMP_SPINCOUNT="5") == "None"


def test_fer_train_and_fer_evaluate_without_options_run_their_librarys_defaults(monkeypatch, tmp_path):
    """`fer train` and `fer evaluate` read their defaults where TrainConfig and evaluate() do
    (fer_batch.defaults): a command with no options runs exactly what the Python API runs."""
    import inspect

    from typer.testing import CliRunner

    import fer_batch.training.evaluate as evaluate_module
    import fer_batch.training.train as train_module

    library_evaluate = inspect.signature(evaluate_module.evaluate).parameters
    seen = {}

    def fake_train(config, **_):
        seen["config"] = config
        return train_module.TrainResult(tmp_path / "best.pt", tmp_path / "last.pt", tmp_path / "metrics.csv", 0.5, 1)

    def fake_evaluate(**kwargs):
        seen["evaluate"] = kwargs

    monkeypatch.setattr(train_module, "train", fake_train)
    monkeypatch.setattr(evaluate_module, "evaluate", fake_evaluate)
    monkeypatch.setattr(evaluate_module, "print_evaluation", lambda *_: None)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen["config"] == train_module.TrainConfig(data=str(tmp_path))
    result = runner.invoke(app, ["evaluate", "--data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    passed = {name: value for name, value in seen["evaluate"].items() if name != "data"}
    assert passed == {name: library_evaluate[name].default for name in passed}
