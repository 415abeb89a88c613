"""Where the time of one `annotate` run goes: torch's profiler over every thread's operators (and
the GPU's kernels on CUDA), and Python's profiler over the run's own thread.

Written for the GPU path, whose throughput is bound by the host (README "On a GPU"): the
operator table says what the device and the detector threads wait on, the Python table which
of the pipeline's own functions hold the run's thread. Models load and the clip's first frames
are annotated once untimed before the profiled run, as in annotate_throughput.py.

    .venv/bin/python benchmarks/profile_annotate.py [--video PATH] [--size 640x360] [--device cuda]
        [--max-frames N] [--set detect_batch=32 --set small_faces_every=1]
"""

from __future__ import annotations

import argparse
import ast
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import fer_batch  # noqa: F401 - before torch, as in `fer`
import cv2
import torch
from torch.profiler import ProfilerActivity, profile

from annotate_throughput import DEFAULT_VIDEO, WARM_UP_FRAMES, annotate, read_frames, write_copy
from fer_batch.options import RunOptions
from fer_batch.pipeline import Annotator


def option_changes(pairs: list[str]) -> dict[str, object]:
    """`name=value` pairs as RunOptions fields; a value is a Python literal (32, 0.5, True) or else a string."""
    defaults = RunOptions()
    changes: dict[str, object] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if not hasattr(defaults, name):
            raise SystemExit(f"--set {pair}: RunOptions has no field {name!r}")
        try:
            changes[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            changes[name] = value
    return changes


def all_threads() -> object | None:
    """The profiler setting that records operators of every thread (the detector runs in threads of
    its own), where this torch has it; without it only the run's own thread is seen."""
    try:
        return torch._C._profiler._ExperimentalConfig(profile_all_threads=True)
    except (AttributeError, TypeError):
        print("(this torch's profiler records the run's own thread only)")
        return None


def profile_run(annotator: Annotator, video: Path, options: RunOptions, rows: int) -> None:
    annotate(annotator, video, RunOptions(max_frames=WARM_UP_FRAMES))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if annotator.device.type == "cuda" else [])
    python = cProfile.Profile()
    started = time.perf_counter()
    with profile(activities=activities, experimental_config=all_threads()) as operators:
        python.enable()
        result = annotate(annotator, video, options)
        python.disable()
    seconds = time.perf_counter() - started
    print(f"{result.frames} frames in {result.seconds:.2f} s ({result.frames / result.seconds:.2f} frames/s; "
          f"{seconds:.2f} s with the profilers' own cost)\n")
    averages = operators.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows))
    if annotator.device.type == "cuda":
        print(averages.table(sort_by="self_cuda_time_total", row_limit=rows))
    print("Python, the run's own thread (tottime: time in the function itself):")
    pstats.Stats(python).sort_stats("tottime").print_stats(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--size", default="", help="WxH: profile a copy of the clip at this size (e.g. 640x360)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a RunOptions field")
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"video not found: {args.video}")
    changes = option_changes(args.set)
    options = RunOptions(max_frames=args.max_frames, **changes)
    annotator = Annotator(device=args.device)
    print(f"device {annotator.device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}; "
          f"options changed: {changes or 'none'}")
    if not args.size:
        profile_run(annotator, args.video, options, args.rows)
        return
    width, height = (int(side) for side in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as folder:
        fps = cv2.VideoCapture(str(args.video)).get(cv2.CAP_PROP_FPS) or 25.0
        copy = write_copy(read_frames(args.video, args.max_frames), (width, height), Path(folder) / "clip.mp4", fps)
        profile_run(annotator, copy, options, args.rows)


if __name__ == "__main__":
    main()
