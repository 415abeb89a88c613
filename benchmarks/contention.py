"""MTCNN speed on an idle machine and beside one other CPU-bound process, per thread setting.

torch's OpenMP threads spin at every barrier before they sleep; when another process
with spinning threads holds the cores, a spinning thread waits for a descheduled one and
a detection can take many times longer. Each setting runs in a child process (OpenMP reads
its environment once, when torch loads); the figure that matters is the ratio loaded/idle.

    .venv/bin/python benchmarks/contention.py [--image PATH] [--repeats N]
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


def measure(image: Path, environment: dict[str, str], threads: int, repeats: int) -> dict:
    inherited = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    completed = subprocess.run(
        [sys.executable, __file__, "--child", "--image", str(image), "--threads", str(threads), "--repeats", str(repeats)],
        capture_output=True, text=True, env={**inherited, **environment}, check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.image, args.threads, args.repeats)
        return
    print(f"image {args.image.name}; {os.cpu_count()} CPUs; median of {args.repeats} detections per setting")
    print(f"{'setting':58s} {'beside':18s} {'idle s':>7s} {'loaded s':>9s} {'loaded/idle':>12s}")
    for label, environment, threads in SETTINGS:
        idle = measure(args.image, environment, threads, args.repeats)
        for name, code in COMPETITORS.items():
            clean = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
            competitor = subprocess.Popen([sys.executable, "-c", code], env=clean)
            try:
                time.sleep(1.0)
                loaded = measure(args.image, environment, threads, args.repeats)
            finally:
                competitor.kill()
                competitor.wait()
            ratio = loaded["median_s"] / idle["median_s"]
            print(f"{label:58s} {name:18s} {idle['median_s']:7.3f} {loaded['median_s']:9.3f} {ratio:12.2f}")


if __name__ == "__main__":
    main()
