"""End-to-end throughput of `annotate` on the shared 1080p crowd clip.

Prints frames/s and faces/s for a few option sets (detection scale, detect-every-k),
each over the same frames, with the models loaded once beforehand (start-up is
reported separately). Speed is checked here, by figures, not by timed tests.

    .venv/bin/python benchmarks/annotate_throughput.py [--video PATH] [--max-frames N] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from fer_batch.options import RunOptions
from fer_batch.pipeline import Annotator

DEFAULT_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "walking-crowd-1080p.mp4"

CONFIGURATIONS = (
    ("defaults (scale 1.0, detect every frame)", {}),
    ("--detect-scale 0.5", {"detect_scale": 0.5}),
    ("--detect-scale 0.5 --detect-every 3", {"detect_scale": 0.5, "detect_every": 3}),
    ("--detect-every 5", {"detect_every": 5}),
)


def classifier_speed(annotator: Annotator, batch: int = 64, repeats: int = 20) -> str:
    """CNN crops/s alone (no detection), with and without the flip averaging annotate uses."""
    from fer_batch.model import EmotionEnsemble, count_parameters, model_macs_per_crop

    model = annotator.checkpoint.model.eval()
    crops = torch.randn(batch, 1, 48, 48, device=annotator.device)
    figures = []
    for flip in (False, True):
        with torch.no_grad():
            model.encode(crops, flip_average=flip)
            begin = time.perf_counter()
            for _ in range(repeats):
                model.encode(crops, flip_average=flip)
            figures.append(batch * repeats / (time.perf_counter() - begin))
    members = len(model.members) if isinstance(model, EmotionEnsemble) else 1
    return (
        f"model: {members} CNN-GRU network(s), {count_parameters(model) / 1e6:.2f} M parameters, "
        f"{model_macs_per_crop(model) / 1e6:.1f} M MACs per crop; "
        f"encoder {figures[0]:.0f} crops/s, {figures[1]:.0f} faces/s with flip averaging (batch {batch})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--max-frames", type=int, default=None, help="frames per configuration (default: the whole clip)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"benchmark video not found: {args.video}")

    started = time.perf_counter()
    annotator = Annotator(device=args.device)
    load_seconds = time.perf_counter() - started
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, device {annotator.device}")
    print(f"video: {args.video.name}; weights: {annotator.checkpoint.name}; model+detector load {load_seconds:.1f} s")
    print(classifier_speed(annotator))
    print(f"{'configuration':48s} {'frames':>6s} {'faces':>6s} {'tracks':>6s} {'seconds':>8s} {'frames/s':>9s} {'faces/s':>8s}")
    for label, changes in CONFIGURATIONS:
        run = annotator.run([args.video], RunOptions(max_frames=args.max_frames, **changes))
        begin = time.perf_counter()
        faces = sum(len(batch) for batch in run)
        seconds = time.perf_counter() - begin
        summary = run.summary()
        frames = int(summary.sources.frames_annotated.sum())
        tracks = len(summary.tracks)
        print(f"{label:48s} {frames:6d} {faces:6d} {tracks:6d} {seconds:8.1f} {frames / seconds:9.2f} {faces / seconds:8.1f}")


if __name__ == "__main__":
    main()
