"""fer-batch: batch facial-emotion annotation of images and videos.

The public API (`annotate`, `iter_annotations`, `annotate_to_file`, `Annotator`,
`build_options`) is imported on first use, so `import fer_batch` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

_API_NAMES = {"annotate", "iter_annotations", "annotate_to_file", "Annotator", "AnnotateOptions", "build_options"}


def __getattr__(name: str):
    if name in _API_NAMES:
        from fer_batch import api

        return getattr(api, name)
    raise AttributeError(f"module 'fer_batch' has no attribute {name!r}")


__all__ = sorted(_API_NAMES)
