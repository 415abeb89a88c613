"""Dataset output: a folder of Parquet parts that a run can resume after any interruption.

`fer annotate IN --out results/` writes

    results/part-00001.parquet ...   the face rows of one source (or of a group of images)
    results/_summary.parquet         per source      (the companions start with '_', which
    results/_tracks.parquet          per track        pyarrow and pandas skip when they read
    results/_errors.parquet          errors           the folder as one table)
    results/_run.json                the run's metadata document

Each part is written under a hidden temporary name and renamed when its sources are
complete, so a part on disk is always whole. Its footer holds the run's metadata and, under
`fer_batch_part`, the identity of its sources (relative path, size, modification time) and
their summary, track and error rows. `--resume` therefore needs nothing but the parts: a
source whose part exists and whose file is unchanged is skipped; everything else is redone,
and the companion tables are rebuilt from all parts at the end.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fer_batch.faces import Faces
from fer_batch.media import MediaSource, discover_sources
from fer_batch.options import ModelOptions, RunOptions, options_document
from fer_batch.pipeline import Annotator, AnnotationRun, ProgressListener
from fer_batch.results import DATASET_RUN_DOCUMENT, METADATA_KEY, RunMetadata, companion_path
from fer_batch.schema import ERROR_SCHEMA, annotation_schema, source_summary_schema, track_summary_schema
from fer_batch.statistics import ErrorRecord, RunSummary
from fer_batch.writers import (
    OutputPathError, check_writable, discard_partial, faces_to_record_batch, is_dataset_path, remove_stale_temporaries,
    temporary_path, write_table_atomic, write_text_atomic,
)

PART_KEY = "fer_batch_part"  # Parquet footer key of a part's own document
PART_PATTERN = "part-*.parquet"
COMPANIONS = ("summary", "tracks", "errors")
MAX_PART_SOURCES = 256  # images are grouped into parts of up to this many sources ...
MAX_PART_ROWS = 200_000  # ... or this many rows; a video always ends its part


class DatasetError(ValueError):
    """An output folder that cannot be used as asked (not empty without --resume, other options)."""


__all__ = ["annotate_to_dataset", "is_dataset_path", "DatasetError", "DatasetResult"]


@dataclass(frozen=True)
class SourceIdentity:
    """What makes a finished source reusable on resume: same name, same bytes (by size and mtime)."""

    source: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, source: MediaSource) -> "SourceIdentity":
        """A file that cannot be looked at (deleted mid-run) gets an identity no file has: redone on resume."""
        try:
            stat = source.path.stat()
        except OSError:
            return cls(source.relative, -1, -1)
        return cls(source.relative, stat.st_size, stat.st_mtime_ns)


@dataclass
class PartDocument:
    """A part's footer document: its sources and their summary, track and error rows."""

    sources: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    tracks: list[dict[str, Any]]
    errors: list[dict[str, Any]]

    def identities(self) -> list[SourceIdentity]:
        return [SourceIdentity(**entry) for entry in self.sources]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows (NaN and None as null, numpy scalars as Python numbers)."""
    return json.loads(frame.to_json(orient="records"))


def read_part_document(path: Path) -> tuple[RunMetadata, PartDocument]:
    stored = pq.read_metadata(path).metadata or {}
    if PART_KEY.encode() not in stored or METADATA_KEY.encode() not in stored:
        raise DatasetError(f"{path}: not a fer-batch dataset part")
    metadata = RunMetadata.from_json(stored[METADATA_KEY.encode()])
    return metadata, PartDocument(**json.loads(stored[PART_KEY.encode()]))


class DatasetWriter:
    """Streams face batches into the current part; `source_finished` closes a part when it is full."""

    def __init__(self, directory: Path, class_names: tuple[str, ...], metadata: RunMetadata, first_part: int = 1) -> None:
        self.directory = Path(directory)
        self.class_names = class_names
        self.schema = annotation_schema(class_names)
        self.metadata = metadata
        self.next_part = first_part
        self.rows_written = 0
        self._writer: pq.ParquetWriter | None = None
        self._temporary: Path | None = None
        self._rows_in_part = 0
        self._pending: list[tuple[SourceIdentity, RunSummary]] = []

    def _part_path(self) -> Path:
        return self.directory / f"part-{self.next_part:05d}.parquet"

    def _open(self) -> None:
        if self._writer is None:
            self._temporary = temporary_path(self._part_path())
            self._writer = pq.ParquetWriter(self._temporary, self.schema, compression="zstd")

    def write(self, faces: Faces) -> None:
        if len(faces) == 0:
            return
        self._open()
        self._writer.write_batch(faces_to_record_batch(faces, self.class_names))
        self._rows_in_part += len(faces)
        self.rows_written += len(faces)

    def source_finished(self, source: MediaSource, summary: RunSummary) -> None:
        self._pending.append((SourceIdentity.of(source), summary))
        if source.media_type == "video" or len(self._pending) >= MAX_PART_SOURCES or self._rows_in_part >= MAX_PART_ROWS:
            self.flush()

    def flush(self) -> Path | None:
        """Close the current part with its document and rename it into place."""
        if not self._pending:
            return None
        self._open()
        summaries = [summary for _, summary in self._pending]
        document = PartDocument(
            sources=[asdict(identity) for identity, _ in self._pending],
            summary=_records(pd.concat([s.sources for s in summaries], ignore_index=True)),
            tracks=_records(pd.concat([s.tracks for s in summaries], ignore_index=True)),
            errors=_records(pd.concat([s.errors for s in summaries], ignore_index=True)),
        )
        self._writer.add_key_value_metadata({**self.metadata.parquet_metadata(), PART_KEY: json.dumps(asdict(document))})
        self._writer.close()
        target = self._part_path()
        os.replace(self._temporary, target)
        self._writer, self._temporary, self._rows_in_part, self._pending = None, None, 0, []
        self.next_part += 1
        return target

    def abort(self) -> None:
        """Discard the part in progress: its sources are redone on resume."""
        discard_partial(self._writer, self._temporary)
        self._writer, self._temporary, self._pending = None, None, []


def _comparable(metadata: RunMetadata) -> dict[str, Any]:
    """What must agree between a resumed run and the parts already written. An option that the
    version which wrote a part did not have counts at its default, which is what that version did."""
    known = options_document(ModelOptions(), RunOptions())
    options = {key: value for key, value in {**known, **metadata.options}.items() if key not in {"threads", "device"}}
    return {"weights_sha256": metadata.weights_sha256, "video_weights_sha256": metadata.video_weights_sha256,
            "class_names": metadata.class_names, "options": options}


def _existing_parts(directory: Path, metadata: RunMetadata, current: dict[str, SourceIdentity]) -> tuple[list[Path], set[str]]:
    """Parts to keep and the sources they cover; parts of changed or vanished sources are removed."""
    kept, covered = [], set()
    for part in sorted(directory.glob(PART_PATTERN)):
        try:
            part_metadata, document = read_part_document(part)
        except (DatasetError, OSError, pa.ArrowException) as error:
            raise DatasetError(f"{part}: cannot read this part ({error}); remove it and resume again") from error
        if _comparable(part_metadata) != _comparable(metadata):
            raise DatasetError(
                f"{directory} was written with other weights or options ({part.name}); resume with the same "
                "options, or write to another directory"
            )
        identities = document.identities()
        if all(current.get(identity.source) == identity for identity in identities):
            kept.append(part)
            covered.update(identity.source for identity in identities)
        else:  # a source changed or is gone: redo the part's sources that remain
            part.unlink()
    return kept, covered


def prepare_directory(directory: Path, resume: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise DatasetError(f"output path {directory} is a file, not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not resume:
        raise DatasetError(
            f"output directory {directory} is not empty; add --resume to continue the run written there, "
            "or choose another directory"
        )
    try:
        check_writable(directory)
    except OutputPathError as error:
        raise DatasetError(str(error)) from error


def collect_summary(parts: list[Path], class_names: tuple[str, ...], input_errors: list[ErrorRecord], elapsed_s: float) -> RunSummary:
    """The whole dataset's summary, tracks and errors tables, from the parts' documents."""
    summary_rows, track_rows, error_rows = [], [], [vars(error) for error in input_errors]
    for part in parts:
        _, document = read_part_document(part)
        summary_rows += document.summary
        track_rows += document.tracks
        error_rows += document.errors
    schemas = (source_summary_schema(class_names), track_summary_schema(class_names), ERROR_SCHEMA)
    tables = [
        pa.Table.from_pylist(rows, schema=schema).to_pandas() if rows else pd.DataFrame(columns=schema.names)
        for rows, schema in zip((summary_rows, track_rows, error_rows), schemas)
    ]
    return RunSummary(class_names, *tables, elapsed_s)


@dataclass
class DatasetResult:
    directory: Path
    summary_path: Path
    tracks_path: Path
    errors_path: Path
    rows: int  # rows written by this run (resumed parts not counted)
    skipped_sources: int  # sources already complete in the directory
    summary: RunSummary

    @property
    def out_path(self) -> Path:
        return self.directory


def annotate_to_dataset(
    paths: list[str | Path],
    directory: str | Path,
    annotator: Annotator,
    options: RunOptions,
    progress: ProgressListener | None = None,
    resume: bool = False,
) -> DatasetResult:
    """Annotate into a dataset folder, one part per source (or group of images); see the module doc."""
    directory = Path(directory)
    prepare_directory(directory, resume)
    remove_stale_temporaries(directory)  # parts of killed runs: their sources are redone
    sources, unsupported = discover_sources([Path(path) for path in paths], options.glob, options.exclude)
    current = {source.relative: SourceIdentity.of(source) for source in sources}
    metadata = AnnotationRun(annotator, options, [str(path) for path in paths], [], [], None).metadata()
    kept, covered = _existing_parts(directory, metadata, current) if resume else ([], set())
    remaining = [source for source in sources if source.relative not in covered]
    run = AnnotationRun(annotator, options, [str(path) for path in paths], remaining, unsupported, progress)
    numbers = [int(part.stem.split("-")[1]) for part in directory.glob(PART_PATTERN)]
    writer = DatasetWriter(directory, run.class_names, metadata, first_part=max(numbers, default=0) + 1)
    run.source_finished_listeners.append(writer.source_finished)
    try:
        for faces in run:
            writer.write(faces)
        writer.flush()
    except BaseException:
        writer.abort()
        raise
    parts = sorted(directory.glob(PART_PATTERN))
    input_errors = [ErrorRecord(name, "input", message) for name, message in unsupported]
    summary = collect_summary(parts, run.class_names, input_errors, run.elapsed_s)
    summary.frames_this_run = run.summary().totals["frames_annotated"]
    final = run.metadata()
    final.source_paths = {source.relative: str(source.path.resolve()) for source in sources}
    schemas = {"summary": source_summary_schema(run.class_names), "tracks": track_summary_schema(run.class_names),
               "errors": ERROR_SCHEMA}
    tables = {"summary": summary.sources, "tracks": summary.tracks, "errors": summary.errors}
    written = [write_table_atomic(tables[kind], companion_path(directory, kind), schemas[kind], final)
               for kind in COMPANIONS]
    write_text_atomic(directory / DATASET_RUN_DOCUMENT, final.to_json())
    return DatasetResult(directory, *written, writer.rows_written, len(sources) - len(remaining), summary)
