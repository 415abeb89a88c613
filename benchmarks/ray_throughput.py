"""Throughput of the local engine and of the Ray Data engine on this machine.

Makes a 640x360 video from the shared crowd clip (looped to `--frames` frames), then times,
in one process and one after the other:

    local engine, default threads (the reference)      local engine, 1 thread
    Ray, 1 worker, video cut in segments               Ray, 2 workers, video not cut (one segment)
    Ray, 2 workers, video cut in segments              Ray, 2 workers, one photo (the fixed cost of a Ray run)

and prints annotated frames/s and the ratio to the reference. Ray runs include planning,
actor start-up (each loads the models), stitching and writing; the local Ray cluster
(`ray.init(num_cpus=2)`) is started once, before the timed runs. Nothing else should run on
the machine meanwhile.

    .venv/bin/python benchmarks/ray_throughput.py [--frames 150] [--segment-seconds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import cv2

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def make_video(target: Path, frames: int) -> Path:
    capture = cv2.VideoCapture(str(SHARED / "walking-crowd-1080p.mp4"))
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (640, 360))
    for _ in range(frames):
        ok, bgr = capture.read()
        if not ok:  # loop the clip
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = capture.read()
        writer.write(cv2.resize(bgr, (640, 360), interpolation=cv2.INTER_AREA))
    writer.release()
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--segment-seconds", type=float, default=2.0)
    arguments = parser.parse_args()

    import ray

    from fer_batch.api import annotate_to_file
    from fer_batch.pipeline import Annotator
    from fer_batch.ray import annotate_to_directory, configure_progress

    work = Path(tempfile.mkdtemp(prefix="fer-ray-bench-"))
    try:
        inputs = work / "inputs"
        inputs.mkdir()
        make_video(inputs / "crowd-640x360.mp4", arguments.frames)
        photo = work / "photo"
        photo.mkdir()
        shutil.copy(SHARED / "group-six-faces.jpg", photo / "group.jpg")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
              f"video: {arguments.frames} frames of 640x360 (the shared crowd clip, looped)")

        rows: list[tuple[str, float, int]] = []

        def timed(name: str, run) -> None:
            start = time.perf_counter()
            frames = run()
            seconds = time.perf_counter() - start
            rows.append((name, seconds, frames))
            print(f"  {name}: {seconds:.1f} s", flush=True)

        for threads in (None, 1):
            annotator = Annotator(device="cpu", threads=threads)  # loaded outside the timing, as a server would
            timed(f"local engine, {'default' if threads is None else threads} thread{'s' if threads != 1 else ''}",
                  lambda: annotate_to_file([inputs], work / f"local-{threads}/", annotator=annotator)
                  .summary.totals["frames_annotated"])
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
        configure_progress(False)
        ray_runs = [
            ("Ray, 1 worker, cut in segments", 1, arguments.segment_seconds, inputs),
            ("Ray, 2 workers, one segment", 2, 1e9, inputs),
            ("Ray, 2 workers, cut in segments", 2, arguments.segment_seconds, inputs),
            ("Ray, 2 workers, one photo", 2, arguments.segment_seconds, photo),
        ]
        for index, (name, workers, segment_s, folder) in enumerate(ray_runs):
            timed(name, lambda: annotate_to_directory(
                [folder], work / f"ray-{index}/", segment_s=segment_s, workers=workers, device="cpu", threads=1,
            ).summary.totals["frames_annotated"])
        ray.shutdown()

        reference = rows[0][2] / rows[0][1]
        print("\n| run | seconds | frames | frames/s | x reference |\n|---|---|---|---|---|")
        for name, seconds, frames in rows:
            print(f"| {name} | {seconds:.1f} | {frames} | {frames / seconds:.2f} | {frames / seconds / reference:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
