"""fer-batch: batch facial-emotion annotation of images and videos.

The public API is imported on first use, so `import fer_batch` stays light:
`annotate`, `iter_faces`, `iter_annotations`, `annotate_to_file` (fer_batch.api),
`Annotator` (fer_batch.pipeline), `RunOptions` and `ModelOptions` (fer_batch.options),
`Faces` (fer_batch.faces) and `read_run` (fer_batch.results).
"""

from __future__ import annotations

import os

# torch's OpenMP threads (libgomp) spin at every barrier before they sleep. Beside another
# busy process a spinning thread waits on a descheduled one: MTCNN ran 3x slower beside a
# Python loop and 19x slower with active waiting; waiting passively keeps it near 1.3-1.4x
# and costs about 10-15 % when the machine is idle (benchmarks/contention.py). OpenMP reads
# this once, when torch loads, so it applies where fer_batch is imported first (as in
# `fer`); a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

__version__ = "0.1.0"

_PUBLIC = {
    "annotate": "fer_batch.api",
    "iter_faces": "fer_batch.api",
    "iter_annotations": "fer_batch.api",
    "annotate_to_file": "fer_batch.api",
    "Annotator": "fer_batch.pipeline",
    "RunOptions": "fer_batch.options",
    "ModelOptions": "fer_batch.options",
    "Faces": "fer_batch.faces",
    "read_run": "fer_batch.results",
    "write_report": "fer_batch.api",
}


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'fer_batch' has no attribute {name!r}")


__all__ = sorted(_PUBLIC)
