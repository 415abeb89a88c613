"""Peak memory against video length: does a long video make the process grow?

Builds 640x360 videos of several lengths by looping the shared crowd clip, and annotates
each in a fresh process, printing its peak RSS. oneDNN keeps compiled kernels per input
shape; R-Net, O-Net and the classifier see a different number of faces in every batch,
so before their batches were padded to powers of two (`fer_batch.runtime.bucket_size`)
the process grew with every new count. `--compare` also runs each length with the
networks unpadded (the old behaviour), for the before/after figures.

    .venv/bin/python benchmarks/memory_long_video.py [--frames 300,1200] [--compare] [--detect-every 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

DEFAULT_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "walking-crowd-1080p.mp4"

CHILD = """
import json, resource, sys, time
import fer_batch
from fer_batch.api import iter_faces
from fer_batch.pipeline import Annotator
video, detect_every, padded = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
annotator = Annotator(device="cpu")
if not padded:  # the old behaviour: R-Net, O-Net and the classifier at whatever batch size comes
    import fer_batch.classifier
    annotator.detector._rnet = annotator.detector._mtcnn.rnet
    annotator.detector._onet = annotator.detector._mtcnn.onet
    fer_batch.classifier.bucket_size = lambda count, smallest=8: count
begin = time.perf_counter()
faces = sum(len(batch) for batch in iter_faces([video], annotator=annotator, detect_every=detect_every))
seconds = time.perf_counter() - begin
print(json.dumps({"faces": faces, "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def looped_video(source: Path, frames: int, target: Path) -> Path:
    """`frames` frames of `source` at 640x360, looping it as often as needed."""
    capture = cv2.VideoCapture(str(source))
    clip = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        clip.append(cv2.resize(bgr, (640, 360), interpolation=cv2.INTER_AREA))
    capture.release()
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (640, 360))
    for index in range(frames):
        writer.write(clip[index % len(clip)])
    writer.release()
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", default="300,1200", help="comma-separated video lengths in frames")
    parser.add_argument("--detect-every", type=int, default=5)
    parser.add_argument("--compare", action="store_true", help="also run with R-Net/O-Net batches unpadded")
    args = parser.parse_args()
    lengths = [int(value) for value in args.frames.split(",")]
    variants = [("padded (shipped)", "1")] + ([("unpadded (before)", "0")] if args.compare else [])
    print(f"640x360 loops of {args.video.name}, --detect-every {args.detect_every}, CPU, one fresh process per run")
    print(f"{'variant':20s} {'frames':>7s} {'faces':>7s} {'seconds':>8s} {'peak RSS MB':>12s}")
    with tempfile.TemporaryDirectory() as folder:
        for name, padded in variants:
            peaks = []
            for frames in lengths:
                video = looped_video(args.video, frames, Path(folder) / f"loop-{frames}.mp4")
                started = time.perf_counter()
                finished = subprocess.run(
                    [sys.executable, "-c", CHILD, str(video), str(args.detect_every), padded],
                    capture_output=True, text=True, check=True,
                )
                result = json.loads(finished.stdout.strip().splitlines()[-1])
                peaks.append(result["peak_rss_mb"])
                print(f"{name:20s} {frames:7d} {result['faces']:7d} {result['seconds']:8.1f} {result['peak_rss_mb']:12.1f}"
                      f"   (process {time.perf_counter() - started:.0f} s)")
            if len(lengths) > 1:
                slope = (peaks[-1] - peaks[0]) / (lengths[-1] - lengths[0]) * 1000
                print(f"{name:20s} growth: {slope:.1f} MB per 1,000 frames")


if __name__ == "__main__":
    main()
