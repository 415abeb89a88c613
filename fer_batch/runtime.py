"""Device selection and CPU threading, shared by annotate, train and evaluate."""

from __future__ import annotations

import os

import cv2
import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; asking for CUDA without one is a clear error."""
    name = name.lower()
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; use one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU on this machine")
    return torch.device(name)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), not every CPU of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without affinity masks
        return os.cpu_count() or 1


def configure_threads(threads: int | None) -> int:
    """Use the same number of threads in torch and OpenCV, whose count the video decoder follows
    (default: the CPUs this process may use)."""
    count = threads or available_cpus()
    torch.set_num_threads(count)
    cv2.setNumThreads(count)
    return count


MAX_DETECT_WORKERS = 4  # windows of frames detected at once on a CPU; each holds its frames and pyramid


def detection_workers(device: torch.device, threads: int) -> tuple[int, int]:
    """(windows of frames detected at once, torch threads for each) for a run with `threads` CPU threads.

    MTCNN's small networks use a second thread badly (one thread does 0.68x the frames of two),
    so on a CPU, windows run side by side, each on its own threads: on two cores, two windows of
    one thread each detect 1.36x the frames a second of one window on two threads, with the same
    faces. A GPU runs one window at a time, batched.
    """
    if device.type != "cpu" or threads < 2:
        return 1, threads
    workers = min(threads, MAX_DETECT_WORKERS)
    return workers, threads // workers


def downstream_threads(threads: int, detecting: int, threads_per_worker: int) -> int:
    """Torch threads for the stages after detection (refinement, the classifier) while `detecting`
    windows are detected side by side on `threads_per_worker` threads each: the run's `threads`
    the detectors leave, at least one, rather than all of them beside the detectors (four busy
    threads on two cores). Measured at the defaults (AVX-512 machine, same process, alternating):
    1.06x and 0.91x (1080p, 640x360) with fer's passive OpenMP waiting, within the machine's
    noise; 1.09x and 1.11x with torch's spinning default."""
    return max(1, threads - detecting * threads_per_worker)


def bucket_size(count: int, smallest: int = 8) -> int:
    """The batch size a network runs at for `count` inputs: the next power of two (at least `smallest`).

    oneDNN compiles and caches kernels per input shape; padding batches to a few sizes keeps
    that cache, and so the process's memory, from growing with every new batch size.
    """
    size = smallest
    while size < count:
        size *= 2
    return size
