"""The Python API: what `fer annotate` does, callable from a data pipeline.

    import fer_batch
    faces = fer_batch.annotate(["videos/", "photos/"])           # pandas.DataFrame
    for face in fer_batch.iter_annotations(["big_archive/"]):   # streaming, constant memory
        ...
    result = fer_batch.annotate_to_file(["videos/"], "results.parquet")  # + summary files
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd

from fer_batch import defaults
from fer_batch.detection import DetectorConfig
from fer_batch.media import SamplingConfig
from fer_batch.pipeline import AnnotateOptions, AnnotationRun, Annotator, FaceAnnotation, ProgressListener
from fer_batch.report import RunSummary, summarize
from fer_batch.schema import ERROR_SCHEMA, annotation_schema, source_summary_schema, track_summary_schema
from fer_batch.tracking import TrackerConfig
from fer_batch.writers import (
    AnnotationWriter,
    annotations_to_table,
    check_output_path,
    companion_path,
    write_table_atomic,
)


def build_options(
    *,
    device: str = "auto",
    weights: str | Path | None = None,
    batch_size: int = defaults.BATCH_SIZE,
    detection_threshold: float = defaults.DETECTION_THRESHOLD,
    min_face_size: int = defaults.MIN_FACE_SIZE,
    detection_scale: float = defaults.DETECTION_SCALE,
    detect_every: int = defaults.DETECT_EVERY,
    detection_batch: int = defaults.DETECTION_BATCH,
    every_nth: int = defaults.EVERY_NTH_FRAME,
    target_fps: float | None = None,
    max_frames: int | None = None,
    track_iou: float = defaults.TRACK_IOU_THRESHOLD,
    track_max_missed: int = defaults.TRACK_MAX_MISSED,
    include: tuple[str, ...] | list[str] = (),
    exclude: tuple[str, ...] | list[str] = (),
) -> AnnotateOptions:
    """Flat keyword options (as the CLI has them) to the nested AnnotateOptions."""
    return AnnotateOptions(
        detector=DetectorConfig(detection_threshold, min_face_size, detection_scale),
        tracker=TrackerConfig(track_iou, track_max_missed),
        sampling=SamplingConfig(every_nth, target_fps, max_frames),
        detect_every=detect_every,
        batch_size=batch_size,
        detection_batch=detection_batch,
        device=device,
        weights=str(weights) if weights else None,
        include=tuple(include),
        exclude=tuple(exclude),
    )


def iter_annotations(paths: list[str | Path], annotator: Annotator | None = None, **options) -> Iterator[FaceAnnotation]:
    """Stream face rows; pass an `Annotator` to reuse loaded models across calls."""
    annotator = annotator or Annotator(build_options(**options))
    yield from annotator.run([Path(path) for path in paths])


def annotate(paths: list[str | Path], annotator: Annotator | None = None, **options) -> pd.DataFrame:
    """All face rows as a DataFrame; `.attrs` holds the errors, sources and tracks tables."""
    annotator = annotator or Annotator(build_options(**options))
    run = annotator.run([Path(path) for path in paths])
    rows = list(run)
    frame = annotations_to_table(rows, annotator.class_names).to_pandas()
    summary = summarize(run)
    frame.attrs.update({"errors": summary.errors, "sources": summary.sources, "tracks": summary.tracks})
    return frame


@dataclass
class AnnotationResult:
    out_path: Path
    summary_path: Path
    tracks_path: Path
    errors_path: Path
    rows: int
    summary: RunSummary
    run: AnnotationRun


def annotate_to_file(
    paths: list[str | Path],
    out_path: str | Path,
    annotator: Annotator | None = None,
    progress: ProgressListener | None = None,
    **options,
) -> AnnotationResult:
    """Run and write the face table plus `<stem>.summary`, `<stem>.tracks`, `<stem>.errors` beside it."""
    out_path = Path(out_path)
    check_output_path(out_path)
    annotator = annotator or Annotator(build_options(**options))
    run = annotator.run([Path(path) for path in paths], progress=progress)
    metadata = annotator.metadata(run)
    writer = AnnotationWriter(out_path, annotator.class_names, metadata)
    try:
        writer.write_all(run)
        summary = summarize(run)
        names = annotator.class_names
        metadata = {
            **metadata,
            "fer_batch.inputs": json.dumps([str(path) for path in paths]),
            "fer_batch.elapsed_s": f"{run.elapsed_s:.3f}",
        }
        summary_path = write_table_atomic(
            summary.sources, companion_path(out_path, "summary"), source_summary_schema(names), metadata
        )
        tracks_path = write_table_atomic(
            summary.tracks, companion_path(out_path, "tracks"), track_summary_schema(names), metadata
        )
        errors_path = write_table_atomic(summary.errors, companion_path(out_path, "errors"), ERROR_SCHEMA, metadata)
        writer.commit(metadata)
    except BaseException:
        writer.abort()
        raise
    return AnnotationResult(out_path, summary_path, tracks_path, errors_path, writer.rows_written, summary, run)


__all__ = [
    "AnnotateOptions",
    "AnnotationResult",
    "Annotator",
    "annotate",
    "annotate_to_file",
    "annotation_schema",
    "build_options",
    "iter_annotations",
]
