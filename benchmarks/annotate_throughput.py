"""Speed and quality of `annotate` against the reference path, in one run.

The reference is what the fer package does per frame: facenet-pytorch `MTCNN.detect` on
every full-resolution frame. For each clip (the shared 1080p crowd clip, and a 640x360
copy of it made here) the script times the reference, then `annotate` under a few option
sets, models loaded once beforehand and each clip's first frames annotated once untimed (the
reference, too, has a warm-up frame), and prints for each:

- frames/s, and its ratio to the reference's frames/s (the speed target is 10x);
- recall of the reference's faces 40 px tall or more, and of those 20-40 px (IoU >= 0.5);
- emotion agreement with the full path (the detector on every frame searching for faces of
  every size from --min-face-size, at the same --threshold) on matched faces;
- tracks, against the full path's.

On a CPU with two or more threads, a row "defaults, one window at a time" runs the defaults
with the detector on one window of frames at a time (as before windows were detected side by
side), so the same run says what that is worth; on a GPU, which detects one window at a time, a
row "defaults, two windows in flight" says what detecting the next window while the host tracks
and classifies the last would be worth.

A last row runs the full path on a lossless copy of the clip moved by one pixel: its "same
emotion" is how much the full path disagrees with itself when only the pixel grid moves (the
classifier is sensitive to where a box falls), the floor for reading the other rows' figure.

Each runs in the OpenMP regime it ships with: `annotate` with the passive waiting `fer` sets
(fer_batch is imported before torch here, as the CLI does), the reference in a process of its
own with torch's default (threads spin a while at each barrier before they sleep).

Figures move 2-3x between machines, so only ratios from one run count.

    .venv/bin/python benchmarks/annotate_throughput.py [--video PATH] [--max-frames N] [--device cpu]
    .venv/bin/python benchmarks/annotate_throughput.py --device cuda --detect-batches 8,64
    .venv/bin/python benchmarks/annotate_throughput.py --weights candidate.pt [--labels-only]

The clips are videos: their faces go through the video encoder (`fer-cnn-gru-video.pt`), or the
--weights file when given (as in `fer annotate`, one file for everything).
Detection does not depend on the weights, so with --weights only "same emotion" (and the
speed of the classifier) can move: how far a candidate encoder's labels hold when the crops
move (keyframes and refinement, the shifted copy). --labels-only prints just that column for
the rows it can move, without the reference or timings (so a busy machine gives the same).

Three options default by device (`fer_batch.defaults`: `--detect-every`, `--detect-batch`,
`--small-faces-every`);
a row runs the other kind of device's defaults on this one, so that one run compares them. With
--detect-batches, the defaults also run with each of those detector batch sizes (frames per
MTCNN call; on a GPU larger batches fill the device).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import fer_batch  # noqa: F401 - before torch, as in `fer`: passive OpenMP waiting (fer_batch/__init__.py)
import cv2
import numpy as np
import torch

from fer_batch import defaults
from fer_batch.faces import Faces
from fer_batch.options import RunOptions
from fer_batch.pipeline import Annotator
from fer_batch.tracking import box_iou

DEFAULT_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "walking-crowd-1080p.mp4"

WARM_UP_FRAMES = 12  # annotated once per clip before the timed rows
FULL_PATH = "--small-faces-every 1 (the full path)"
FULL_DETECTION = {"detect_every": 1, "small_faces_every": 1}  # every frame searched for faces of every size
DETECT_EVERY_FRAME = "--detect-every 1"
EIGHTEENTH_DEFAULTS = "--detect-every 5 --detect-batch 4 (18th session's)"
CONFIGURATIONS = (
    ("defaults", {}),
    (FULL_PATH, FULL_DETECTION),
    (DETECT_EVERY_FRAME, {"detect_every": 1}),
    (EIGHTEENTH_DEFAULTS, {"detect_every": 5, "detect_batch": 4}),
    ("--detect-every 5", {"detect_every": 5}),
    ("--detect-every 10", {"detect_every": 10}),
    ("--detect-scale 0.5 --detect-every 5", {"detect_scale": 0.5, "detect_every": 5}),
    ("--threshold 0.7 (the reference's) --detect-every 5", {"threshold": 0.7, "detect_every": 5}),
    ("--threshold 0.7 --detect-every 10", {"threshold": 0.7, "detect_every": 10}),
    ("--proposal-threshold 0.8 --detect-every 5", {"proposal_threshold": 0.8, "detect_every": 5}),
    ("--proposal-threshold 0.8 --detect-every 10", {"proposal_threshold": 0.8, "detect_every": 10}),
)


@dataclass
class Result:
    seconds: float
    frames: int
    boxes: dict[int, np.ndarray]  # frame index -> (N, 4)
    emotions: dict[int, np.ndarray]  # frame index -> (N,) class index
    tracks: int


def read_frames(video: Path, max_frames: int | None) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while max_frames is None or len(frames) < max_frames:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def write_copy(frames: list[np.ndarray], size: tuple[int, int], path: Path, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for rgb in frames:
        writer.write(cv2.cvtColor(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


# The reference runs as the fer package runs: torch's own OpenMP waiting (spin 300,000 times, then
# sleep), not the passive waiting `fer` sets, so it is timed in a process of its own.
REFERENCE_ENVIRONMENT = {"GOMP_SPINCOUNT": "300000"}  # libgomp's default; keeps fer_batch from setting PASSIVE


def reference(video: Path, max_frames: int | None, device: torch.device) -> Result:
    """facenet-pytorch MTCNN.detect on every full-resolution frame (frames decoded beforehand), in a
    child process with torch's default OpenMP waiting."""
    environment = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "reference.npz"
        command = [sys.executable, __file__, "--reference-child", str(out), "--video", str(video), "--device", str(device)]
        if max_frames is not None:
            command += ["--max-frames", str(max_frames)]
        subprocess.run(command, check=True, env={**environment, **REFERENCE_ENVIRONMENT})
        with np.load(out) as saved:
            seconds = float(saved["seconds"])
            boxes = {int(key.removeprefix("frame")): saved[key] for key in saved.files if key.startswith("frame")}
    return Result(seconds, len(boxes), boxes, {}, 0)


def reference_child(video: Path, max_frames: int | None, device: str, out: Path) -> None:
    from facenet_pytorch import MTCNN

    assert os.environ.get("OMP_WAIT_POLICY") is None, "the reference must run with torch's default OpenMP waiting"
    mtcnn = MTCNN(keep_all=True, device=device)
    frames = read_frames(video, max_frames)
    mtcnn.detect(frames[0])  # warm-up
    boxes = {}
    begin = time.perf_counter()
    for index, rgb in enumerate(frames):
        found, _ = mtcnn.detect(rgb)
        boxes[f"frame{index}"] = np.zeros((0, 4)) if found is None else np.asarray(found, np.float64)
    np.savez(out, seconds=time.perf_counter() - begin, **boxes)


def annotate(annotator: Annotator, video: Path, options: RunOptions) -> Result:
    run = annotator.run([video], options)
    batches: list[Faces] = []
    begin = time.perf_counter()
    for batch in run:
        batches.append(batch)
    seconds = time.perf_counter() - begin
    faces = Faces.concat(batches) if batches else None
    boxes, emotions = {}, {}
    if faces is not None:
        for index in np.unique(faces.frame_index):
            rows = faces.frame_index == index
            boxes[int(index)] = faces.boxes[rows].astype(np.float64)
            emotions[int(index)] = faces.probabilities[rows].argmax(axis=1)
    summary = run.summary()
    return Result(seconds, int(summary.sources.frames_annotated.sum()), boxes, emotions, len(summary.tracks))


def recall_counts(found: Result, truth: Result, low: float, high: float) -> tuple[int, int]:
    """(found, total): the truth's faces with a height in [low, high), and how many `found` has (IoU >= 0.5)."""
    hits, total = 0, 0
    for index, expected in truth.boxes.items():
        heights = expected[:, 3] - expected[:, 1]
        wanted = (heights >= low) & (heights < high)
        total += int(wanted.sum())
        got = found.boxes.get(index, np.zeros((0, 4)))
        if wanted.any() and len(got):
            hits += int((box_iou(expected[wanted], got).max(axis=1) >= 0.5).sum())
    return hits, total


def recall(found: Result, truth: Result, low: float, high: float) -> tuple[float, int]:
    """Share of the truth's faces with a height in [low, high) that `found` has (IoU >= 0.5)."""
    hits, total = recall_counts(found, truth, low, high)
    return (hits / total if total else float("nan")), total


def agreement_counts(found: Result, full: Result) -> tuple[int, int]:
    """(same, matched): the full path's faces found here (IoU >= 0.5), and how many get the same emotion."""
    same, matched = 0, 0
    for index, expected in full.boxes.items():
        got = found.boxes.get(index)
        if got is None or not len(got) or not len(expected):
            continue
        overlaps = box_iou(expected, got)
        for row in np.flatnonzero(overlaps.max(axis=1) >= 0.5):
            matched += 1
            same += int(full.emotions[index][row] == found.emotions[index][overlaps[row].argmax()])
    return same, matched


def agreement(found: Result, full: Result) -> float:
    """Share of the full path's faces found here (IoU >= 0.5) that get the same emotion."""
    same, matched = agreement_counts(found, full)
    return same / matched if matched else float("nan")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def classifier_speed(annotator: Annotator, batch: int = 64, repeats: int = 20) -> str:
    """The video encoder's crops/s alone (no detection; the clips are videos), with and without the
    flip averaging annotate uses."""
    from fer_batch.model import EmotionEnsemble, count_parameters, load_checkpoint, model_macs_per_crop

    model = annotator.video_checkpoint.model.to(annotator.device).eval()
    crops = torch.randn(batch, 1, 48, 48, device=annotator.device)
    figures = []
    for flip in (False, True):
        with torch.no_grad():
            model.encode(crops, flip_average=flip)
            _synchronize(annotator.device)
            begin = time.perf_counter()
            for _ in range(repeats):
                model.encode(crops, flip_average=flip)
            _synchronize(annotator.device)
            figures.append(batch * repeats / (time.perf_counter() - begin))
    members = len(model.members) if isinstance(model, EmotionEnsemble) else 1
    checkpoint = annotator.video_checkpoint
    # An int8 encoder's packed weights are not torch parameters: count the float network's.
    counted = model if checkpoint.precision == "fp32" or checkpoint.path is None else load_checkpoint(checkpoint.path).model
    return (
        f"model: {members} CNN-GRU network(s), {count_parameters(counted) / 1e6:.2f} M parameters, "
        f"{model_macs_per_crop(model) / 1e6:.1f} M MACs per crop, {checkpoint.precision} encoder; "
        f"encoder {figures[0]:.0f} crops/s, {figures[1]:.0f} faces/s with flip averaging (batch {batch})"
    )


def benchmark_clip(
    annotator: Annotator, video: Path, label: str, max_frames: int | None, detect_batches: tuple[int, ...] = ()
) -> None:
    truth = reference(video, max_frames, annotator.device)
    reference_fps = truth.frames / truth.seconds
    print(f"\n{label}: {truth.frames} frames; reference MTCNN.detect on every frame (facenet-pytorch's default "
          f"thresholds 0.6/0.7/0.7; fer-batch's --threshold is {RunOptions().threshold}): {reference_fps:.2f} frames/s")
    print(f"{'configuration':48s} {'frames/s':>8s} {'x ref':>6s} {'recall>=40px':>13s} {'recall 20-40':>13s} "
          f"{'same emotion':>12s} {'tracks':>10s}")
    # Warm-up, as the reference had one: the first run at a frame size builds oneDNN's kernels for its
    # pyramid levels and batch sizes, which the first row timed alone would pay for the others.
    annotate(annotator, video, RunOptions(max_frames=WARM_UP_FRAMES))
    runs: dict[RunOptions, Result] = {}  # identical option sets (e.g. a GPU's defaults and the full path) run once

    def options_of(**changes) -> RunOptions:  # as the annotator runs them on its device, to find identical sets
        return RunOptions(max_frames=max_frames, **changes).for_device(annotator.device)

    results = {}
    configurations = list(CONFIGURATIONS)
    configurations.insert(1, other_devices_defaults(annotator.device))
    for size in detect_batches:  # on a GPU larger batches feed the device (README "On a GPU")
        configurations.append((f"defaults --detect-batch {size}", {"detect_batch": size}))
    for name, changes in configurations:
        options = options_of(**changes)
        results[name] = runs[options] = runs.get(options) or annotate(annotator, video, options)
    if annotator.detect_workers > 1:  # what detecting windows side by side is worth, in this run
        results[ONE_WINDOW] = with_windows(annotator, video, options_of(), 1, annotator.threads)
    elif annotator.device.type != "cpu":  # a GPU detects one window at a time: would a second overlap the host's work?
        results[TWO_WINDOWS] = with_windows(annotator, video, options_of(), 2, max(1, annotator.threads // 2))

    def full_path(name: str) -> Result:  # the full detector on every frame at the same threshold
        threshold = dict(configurations).get(name, {}).get("threshold", RunOptions().threshold)
        options = options_of(threshold=threshold, **FULL_DETECTION)
        if options not in runs:
            runs[options] = annotate(annotator, video, options)
        return runs[options]

    def row(name: str, result: Result, full: Result) -> None:
        fps = result.frames / result.seconds
        large, large_count = recall(result, truth, 40, float("inf"))
        small, small_count = recall(result, truth, 20, 40)
        print(f"{name:48s} {fps:8.2f} {fps / reference_fps:6.2f} {large:8.1%} ({large_count:3d}) "
              f"{small:8.1%} ({small_count:3d}) {agreement(result, full):12.1%} {result.tracks:4d} / {full.tracks:<3d}")

    for name, result in results.items():
        row(name, result, full_path(name))
    shifted = shifted_full_path(annotator, video, max_frames)
    if shifted is not None:
        row(SHIFTED_FULL_PATH, shifted, full_path(FULL_PATH))


# The rows of CONFIGURATIONS whose "same emotion" an encoder can move at the defaults' detector settings.
LABEL_ROWS = tuple((name, changes) for name, changes in CONFIGURATIONS
                   if name in ("defaults", DETECT_EVERY_FRAME, EIGHTEENTH_DEFAULTS, "--detect-every 5", "--detect-every 10"))


def label_agreement(annotator: Annotator, video: Path, label: str, max_frames: int | None) -> None:
    """Only the "same emotion" column, of the rows an encoder can move (the defaults, keyframe
    rows, the full path moved by a pixel): no reference and no timings, so it means the same
    on a busy machine. Detection does not depend on the weights; the labels do."""
    runs: dict[RunOptions, Result] = {}  # rows with the same options on this device (defaults, --detect-every 5) run once

    def run(**changes) -> Result:
        options = RunOptions(max_frames=max_frames, **changes).for_device(annotator.device)
        runs[options] = runs.get(options) or annotate(annotator, video, options)
        return runs[options]

    full = run(**FULL_DETECTION)
    figures = [(name, agreement(run(**changes), full)) for name, changes in LABEL_ROWS]
    shifted = shifted_full_path(annotator, video, max_frames)
    if shifted is not None:
        figures.append((SHIFTED_FULL_PATH, agreement(shifted, full)))
    print(f"\n{label}: same emotion as the full path ({full.frames} frames)")
    for name, figure in figures:
        print(f"{name:48s} {figure:12.1%}")


ONE_WINDOW = "defaults, one window at a time"
TWO_WINDOWS = "defaults, two windows in flight"


def other_devices_defaults(device: torch.device) -> tuple[str, dict]:
    """The row of the device-dependent defaults of the other kind of device than `device`."""
    other = "cuda" if defaults.device_kind(device) == "cpu" else "cpu"
    theirs = RunOptions().for_device(other)
    return (f"a {defaults.device_kind(other).upper()}'s: {device_defaults(theirs)}",
            {"detect_every": theirs.detect_every, "detect_batch": theirs.detect_batch, "small_faces_every": theirs.small_faces_every})


def device_defaults(options: RunOptions) -> str:
    """The device-dependent options of resolved `options`, as flags."""
    return (f"--detect-every {options.detect_every} --detect-batch {options.detect_batch} "
            f"--small-faces-every {options.small_faces_every}")


def with_windows(annotator: Annotator, video: Path, options: RunOptions, workers: int, threads_each: int) -> Result:
    """A run with `workers` windows of frames detected at once, on `threads_each` torch threads each,
    instead of the annotator's split (fer_batch.runtime.detection_workers): on a CPU one window at a
    time on all threads, as before windows were detected side by side; on a GPU, which detects one
    window at a time, two, so that the host's work on one overlaps the other's detection."""
    split = annotator.detect_workers, annotator.detect_threads
    annotator.detect_workers, annotator.detect_threads = workers, threads_each
    try:
        return annotate(annotator, video, options)
    finally:
        annotator.detect_workers, annotator.detect_threads = split


SHIFTED_FULL_PATH = "full path, the video shifted by 1 px (noise)"


def shifted_full_path(annotator: Annotator, video: Path, max_frames: int | None) -> Result | None:
    """The full path on a lossless copy of the clip moved one pixel right and down, its boxes moved
    back: how far the full path's own answers move when nothing but the pixel grid does. Its
    "same emotion" is the floor under which no other configuration's figure says anything."""
    frames = read_frames(video, max_frames)
    height, width = frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "shifted.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (width, height))
        if not writer.isOpened():
            print("(no lossless FFV1 writer in this OpenCV: the shifted full path is left out)")
            return None
        for rgb in frames:
            moved = np.empty_like(rgb)
            moved[1:, 1:] = rgb[:-1, :-1]
            moved[0, 1:] = rgb[0, :-1]  # the new edges repeat their neighbours
            moved[:, 0] = moved[:, 1]
            writer.write(cv2.cvtColor(moved, cv2.COLOR_RGB2BGR))
        writer.release()
        del frames
        result = annotate(annotator, path, RunOptions(max_frames=max_frames, **FULL_DETECTION))
    result.boxes = {index: boxes - 1.0 for index, boxes in result.boxes.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--max-frames", type=int, default=None, help="frames per clip (default: the whole clip)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--detect-batches", default="", help="comma-separated detector batch sizes to add (e.g. 1,8,32)")
    parser.add_argument("--classifier-batch", type=int, default=64)
    parser.add_argument("--weights", type=Path, default=None,
                        help="another checkpoint than the shipped one (e.g. a candidate encoder): its labels decide 'same emotion'")
    parser.add_argument("--precision", default=defaults.PRECISION, help="as fer annotate's --precision")
    parser.add_argument("--labels-only", action="store_true",
                        help="only 'same emotion' of the rows an encoder moves: no reference, no timings")
    parser.add_argument("--reference-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_child is not None:
        reference_child(args.video, args.max_frames, args.device, args.reference_child)
        return
    detect_batches = tuple(int(size) for size in args.detect_batches.split(",") if size.strip())
    if not args.video.is_file():
        raise SystemExit(f"benchmark video not found: {args.video}")

    started = time.perf_counter()
    annotator = Annotator(device=args.device, weights=args.weights, precision=args.precision)
    load_seconds = time.perf_counter() - started
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}, device {annotator.device}; OpenMP waiting: annotate "
          f"{os.environ.get('OMP_WAIT_POLICY', 'default')} (as `fer`), the reference torch's default (its own process)")
    print(f"weights: {annotator.video_checkpoint.name} for the clips; model+detector load {load_seconds:.1f} s; defaults here: "
          f"{device_defaults(RunOptions().for_device(annotator.device))}")
    if args.labels_only:
        def run_clip(video: Path, label: str) -> None:
            label_agreement(annotator, video, label, args.max_frames)
    else:
        print(classifier_speed(annotator, batch=args.classifier_batch))

        def run_clip(video: Path, label: str) -> None:
            benchmark_clip(annotator, video, label, args.max_frames, detect_batches)
    run_clip(args.video, f"{args.video.name} (1920x1080)")
    with tempfile.TemporaryDirectory() as folder:
        fps = cv2.VideoCapture(str(args.video)).get(cv2.CAP_PROP_FPS) or 25.0
        small = write_copy(read_frames(args.video, args.max_frames), (640, 360), Path(folder) / "crowd-640x360.mp4", fps)
        run_clip(small, "the same clip at 640x360")


if __name__ == "__main__":
    main()
