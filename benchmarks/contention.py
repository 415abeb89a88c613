"""MTCNN speed on an idle machine and beside one other CPU-bound process, per thread setting.

torch's OpenMP threads spin at every barrier before they sleep; when another process
with spinning threads holds the cores, a spinning thread waits for a descheduled one and
a detection can take many times longer. Each setting runs in a child process (OpenMP reads
its environment once, when torch loads); the figure that matters is the ratio loaded/idle.

With --video, each setting times the whole pipeline instead (`Annotator.run` at the defaults on
the video's first --frames frames: detection windows side by side, refinement, the classifier),
the figure the speed issue's contention bound is about.

    .venv/bin/python benchmarks/contention.py [--image PATH] [--repeats N]
    .venv/bin/python benchmarks/contention.py --video ../shared/media/walking-crowd-1080p.mp4 --frames 24 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# The other process: a plain Python loop (one busy core), or torch doing matrix products on
# 2 threads with its defaults, as a training run or a test suite beside the annotator does.
COMPETITORS = {
    "python loop": "while True: pass",
    "torch, 2 threads": "import torch\ntorch.set_num_threads(2)\nx = torch.randn(512, 512)\nwhile True: x @ x",
}
DEFAULT_IMAGE = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "group-six-faces.jpg"

# (label, extra environment, --threads); fer_batch sets OMP_WAIT_POLICY=PASSIVE unless told otherwise.
SETTINGS = (
    ("active waiting (OMP_WAIT_POLICY=ACTIVE), 2 threads", {"OMP_WAIT_POLICY": "ACTIVE"}, 2),
    ("torch's default: spin 300,000 times, 2 threads", {"GOMP_SPINCOUNT": "300000"}, 2),
    ("fer-batch default: passive waiting, 2 threads", {}, 2),
    ("fer-batch default, --threads 1", {}, 1),
)


def child_pipeline(video: Path, frames: int, threads: int, repeats: int) -> None:
    """Time `annotate` at the defaults on the video's first `frames` frames; print the median as JSON."""
    import fer_batch  # noqa: F401 - first, as in `fer`: it sets the OpenMP wait policy before torch loads
    import torch

    from fer_batch.options import RunOptions
    from fer_batch.pipeline import Annotator

    annotator = Annotator(device="cpu", threads=threads)
    options = RunOptions(max_frames=frames)
    sum(len(faces) for faces in annotator.run([video], RunOptions(max_frames=4)))  # warm-up
    seconds, found = [], 0
    for _ in range(repeats):
        begin = time.perf_counter()
        found = sum(len(faces) for faces in annotator.run([video], options))
        seconds.append(time.perf_counter() - begin)
    seconds.sort()
    print(json.dumps({"median_s": seconds[len(seconds) // 2], "faces": found, "torch_threads": torch.get_num_threads()}))


def child(image: Path, threads: int, repeats: int) -> None:
    """Time detections of one image and print the median seconds as JSON."""
    import fer_batch  # noqa: F401 - first, as in `fer`: it sets the OpenMP wait policy before torch loads
    import torch

    from fer_batch.detection import FaceDetector
    from fer_batch.media import Frame, read_image
    from fer_batch.runtime import configure_threads

    configure_threads(threads)
    detector = FaceDetector("cpu")
    frame = Frame(None, 0, 0.0, read_image(image))
    detector.detect([frame])  # warm-up
    seconds = []
    for _ in range(repeats):
        begin = time.perf_counter()
        faces = detector.detect([frame])
        seconds.append(time.perf_counter() - begin)
    seconds.sort()
    print(json.dumps({"median_s": seconds[len(seconds) // 2], "faces": len(faces), "torch_threads": torch.get_num_threads()}))


def measure(image: Path, environment: dict[str, str], threads: int, repeats: int, video: Path | None = None,
            frames: int = 0) -> dict:
    inherited = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    what = ["--video", str(video), "--frames", str(frames)] if video is not None else ["--image", str(image)]
    completed = subprocess.run(
        [sys.executable, __file__, "--child", *what, "--threads", str(threads), "--repeats", str(repeats)],
        capture_output=True, text=True, env={**inherited, **environment}, check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--video", type=Path, default=None, help="time the whole pipeline on this video instead")
    parser.add_argument("--frames", type=int, default=24, help="with --video: frames annotated per timing")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.video is not None:
            child_pipeline(args.video, args.frames, args.threads, args.repeats)
        else:
            child(args.image, args.threads, args.repeats)
        return
    if args.video is not None:
        print(f"video {args.video.name}, first {args.frames} frames annotated at the defaults; {os.cpu_count()} CPUs; "
              f"median of {args.repeats} runs per setting")
    else:
        print(f"image {args.image.name}; {os.cpu_count()} CPUs; median of {args.repeats} detections per setting")
    print(f"{'setting':58s} {'beside':18s} {'idle s':>7s} {'loaded s':>9s} {'loaded/idle':>12s}")
    for label, environment, threads in SETTINGS:
        idle = measure(args.image, environment, threads, args.repeats, args.video, args.frames)
        for name, code in COMPETITORS.items():
            clean = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
            competitor = subprocess.Popen([sys.executable, "-c", code], env=clean)
            try:
                time.sleep(1.0)
                loaded = measure(args.image, environment, threads, args.repeats, args.video, args.frames)
            finally:
                competitor.kill()
                competitor.wait()
            ratio = loaded["median_s"] / idle["median_s"]
            print(f"{label:58s} {name:18s} {idle['median_s']:7.3f} {loaded['median_s']:9.3f} {ratio:12.2f}")


if __name__ == "__main__":
    main()
