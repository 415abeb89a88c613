"""The Python API: what `fer annotate` does, callable from a data pipeline.

Options are keywords with the CLI's names (`--detect-scale 0.5` is `detect_scale=0.5`):

    import fer_batch
    faces = fer_batch.annotate(["videos/", "photos/"], max_frames=100)    # pandas.DataFrame
    for batch in fer_batch.iter_faces(["archive/"]):                       # columnar Faces batches
        ...
    result = fer_batch.annotate_to_file(["videos/"], "results.parquet")   # + summary, tracks, errors
    result = fer_batch.annotate_to_file(["videos/"], "results/", resume=True)  # a resumable dataset folder
    run = fer_batch.read_run("results.parquet")                           # all of it back, with metadata
    fer_batch.write_report("results.parquet", report="report.html", render="annotated/")
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from fer_batch.faces import Faces
from fer_batch.options import ModelOptions, split_options
from fer_batch.pipeline import AnnotationRun, Annotator, ProgressListener
from fer_batch.results import companion_path
from fer_batch.schema import ERROR_SCHEMA, annotation_schema, source_summary_schema, track_summary_schema
from fer_batch.statistics import RunSummary
from fer_batch.dataset import DatasetResult, annotate_to_dataset
from fer_batch.writers import AnnotationWriter, check_output_path, faces_to_record_batch, faces_to_table, write_table_atomic


def _start(
    paths: list[str | Path], annotator: Annotator | None, progress: ProgressListener | None, options: dict[str, Any]
) -> AnnotationRun:
    """Check the options, load models unless an annotator is given, and set up the run."""
    model_options, run_options = split_options(options)
    if annotator is None:
        annotator = Annotator(**model_options)
    else:
        built = asdict(annotator.model_options)
        wanted = asdict(ModelOptions(**model_options))
        conflicts = [f"{name}={wanted[name]!r}" for name in model_options if wanted[name] != built[name]]
        if conflicts:
            raise ValueError(
                f"the annotator was built with {', '.join(f'{name}={built[name]!r}' for name in model_options)}, "
                f"not {', '.join(conflicts)}; build an Annotator with those options instead"
            )
    return annotator.run(paths, run_options, progress)


def iter_faces(paths: list[str | Path], annotator: Annotator | None = None, **options: Any) -> Iterator[Faces]:
    """Stream classified face batches (columns as arrays) in constant memory."""
    yield from _start(paths, annotator, None, options)


def iter_annotations(paths: list[str | Path], annotator: Annotator | None = None, **options: Any) -> Iterator[tuple]:
    """Stream one row per face, a named tuple with the face table's columns (`row.emotion`, `row.prob_happy`)."""
    run = _start(paths, annotator, None, options)
    row = namedtuple("FaceRow", annotation_schema(run.class_names).names)
    for faces in run:
        for values in faces_to_record_batch(faces, run.class_names).to_pylist():
            yield row(**values)


def annotate(paths: list[str | Path], annotator: Annotator | None = None, **options: Any) -> pd.DataFrame:
    """All face rows as a DataFrame; `.attrs` holds the errors, sources and tracks tables."""
    run = _start(paths, annotator, None, options)
    frame = faces_to_table(list(run), run.class_names).to_pandas()
    summary = run.summary()
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


def annotate_to_file(
    paths: list[str | Path],
    out: str | Path,
    annotator: Annotator | None = None,
    progress: ProgressListener | None = None,
    resume: bool = False,
    **options: Any,
) -> "AnnotationResult | DatasetResult":
    """Run and write the face table plus `<stem>.summary`, `<stem>.tracks`, `<stem>.errors` beside it.

    A directory `out` (trailing slash, or no extension) gets a dataset of Parquet parts instead
    (fer_batch.dataset); `resume=True` continues one, skipping the sources already complete.
    """
    output_format = check_output_path(Path(out))
    if output_format == "dataset":
        run = _start([], annotator, None, options)  # checks the options and loads the models once
        return annotate_to_dataset(paths, out, run.annotator, run.options, progress, resume=resume)
    if resume:
        raise ValueError("resume applies to a dataset directory output (--out results/), not to a single file")
    out = Path(out)
    run = _start(paths, annotator, progress, options)
    writer = AnnotationWriter(out, run.class_names)
    try:
        for faces in run:
            writer.write(faces)
        summary = run.summary()
        metadata = run.metadata()
        names = run.class_names
        tables = (
            ("summary", summary.sources, source_summary_schema(names)),
            ("tracks", summary.tracks, track_summary_schema(names)),
            ("errors", summary.errors, ERROR_SCHEMA),
        )
        written = [write_table_atomic(table, companion_path(out, kind), schema, metadata) for kind, table, schema in tables]
        writer.commit(metadata)
    except BaseException:
        writer.abort()
        raise
    return AnnotationResult(out, *written, writer.rows_written, summary)


@dataclass
class ReportOutputs:
    report: Path | None
    rendered: list[Path]  # annotated copies written
    render_failures: list[tuple[str, str]]  # (source, reason) for sources that could not be rendered


def write_report(results: str | Path, report: str | Path | None = None, render: str | Path | None = None) -> ReportOutputs:
    """The HTML report and/or annotated copies of an annotate output (file or dataset folder).

    Renders come first, so the report can show each annotated video beside its timelines.
    """
    from fer_batch.html_report import build_report
    from fer_batch.render import render_run, rendered_videos
    from fer_batch.results import read_run

    tables = read_run(results)
    written: list[Path] = []
    failed: list[tuple[str, str]] = []
    videos: dict[str, Path] = {}
    if render is not None:
        written, failed = render_run(tables, render)
        done = set(written)
        videos = {source: path for source, path in rendered_videos(tables, render).items() if path in done}
    if report is not None:
        build_report(tables, report, videos=videos)
    return ReportOutputs(Path(report) if report is not None else None, written, failed)
