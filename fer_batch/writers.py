"""Writers for the annotation table and its companion tables (Parquet or CSV).

Rows are streamed in row groups, so a long run never holds the table in memory.
Everything is written under a temporary name in the output folder and renamed at
the end: an interrupted run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fer_batch import defaults
from fer_batch.pipeline import FaceAnnotation
from fer_batch.schema import annotation_schema, landmark_columns, pandas_dtypes, probability_columns


class OutputPathError(ValueError):
    """An --out path the tool cannot write: a usage error, reported before any work."""


def check_output_path(path: Path) -> str:
    """The output format ('parquet' or 'csv') from the extension, or a clear error."""
    suffix = path.suffix.lower()
    if suffix not in defaults.OUTPUT_SUFFIXES:
        raise OutputPathError(
            f"unsupported output extension '{path.suffix or '(none)'}' for {path}; use .parquet or .csv"
        )
    if path.exists() and path.is_dir():
        raise OutputPathError(f"output path {path} is a directory; give a file name ending .parquet or .csv")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise OutputPathError(f"output folder {parent} is not a directory")
    return suffix[1:]


def companion_path(out_path: Path, kind: str) -> Path:
    """results.parquet -> results.summary.parquet, results.tracks.parquet, results.errors.parquet."""
    return out_path.with_name(f"{out_path.stem}.{kind}{out_path.suffix}")


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def annotations_to_table(annotations: list[FaceAnnotation], class_names: tuple[str, ...]) -> pa.Table:
    schema = annotation_schema(class_names)
    count = len(annotations)
    boxes = np.array([a.box for a in annotations], dtype=np.float32).reshape(count, 4)
    landmarks = np.array([a.landmarks for a in annotations], dtype=np.float32).reshape(count, 10)
    probabilities = np.array([a.probabilities for a in annotations], dtype=np.float32).reshape(count, len(class_names))
    columns: dict[str, object] = {
        "source": [a.source for a in annotations],
        "media_type": [a.media_type for a in annotations],
        "frame_index": np.array([a.frame_index for a in annotations], dtype=np.int64),
        "timestamp_s": np.array([a.timestamp_s for a in annotations], dtype=np.float64),
        "track_id": np.array([a.track_id for a in annotations], dtype=np.int32),
        "x1": boxes[:, 0], "y1": boxes[:, 1], "x2": boxes[:, 2], "y2": boxes[:, 3],
        "det_score": np.array([a.det_score for a in annotations], dtype=np.float32),
        "detected": np.array([a.detected for a in annotations], dtype=bool),
        "frame_width": np.array([a.frame_width for a in annotations], dtype=np.int32),
        "frame_height": np.array([a.frame_height for a in annotations], dtype=np.int32),
    }
    for index, name in enumerate(landmark_columns()):
        columns[name] = landmarks[:, index]
    for index, name in enumerate(probability_columns(class_names)):
        columns[name] = probabilities[:, index]
    columns["emotion"] = [a.emotion for a in annotations]
    columns["confidence"] = np.array([a.confidence for a in annotations], dtype=np.float32)
    return pa.Table.from_pydict({name: columns[name] for name in schema.names}, schema=schema)


class AnnotationWriter:
    """Streams FaceAnnotation rows to Parquet or CSV; `commit()` renames into place."""

    def __init__(
        self, out_path: Path, class_names: tuple[str, ...], metadata: dict[str, str], rows_per_group: int = 20_000
    ) -> None:
        self.out_path = Path(out_path)
        self.format = check_output_path(self.out_path)
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.class_names = class_names
        self.schema = annotation_schema(class_names).with_metadata(metadata)
        self.metadata = metadata
        self.rows_per_group = rows_per_group
        self.rows_written = 0
        self._buffer: list[FaceAnnotation] = []
        self._temporary = _temporary(self.out_path)
        self._parquet: pq.ParquetWriter | None = None
        self._csv_started = False

    def write(self, annotation: FaceAnnotation) -> None:
        self._buffer.append(annotation)
        if len(self._buffer) >= self.rows_per_group:
            self._flush()

    def write_all(self, annotations: Iterable[FaceAnnotation]) -> None:
        for annotation in annotations:
            self.write(annotation)

    def _flush(self) -> None:
        table = annotations_to_table(self._buffer, self.class_names).replace_schema_metadata(self.metadata)
        self._buffer = []
        self._write_table(table)

    def _write_table(self, table: pa.Table) -> None:
        if self.format == "parquet":
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self._temporary, self.schema, compression="zstd")
            self._parquet.write_table(table)
        else:
            table.to_pandas().to_csv(self._temporary, mode="a" if self._csv_started else "w", header=not self._csv_started, index=False)
            self._csv_started = True
        self.rows_written += table.num_rows

    def commit(self, final_metadata: dict[str, str] | None = None) -> Path:
        """Finish and rename into place; `final_metadata` (known only at the end) goes to CSV's meta.json."""
        if self._buffer or self.rows_written == 0:
            if self._buffer:
                self._flush()
            else:
                self._write_table(self.schema.empty_table())
        if self._parquet is not None:
            self._parquet.close()
        os.replace(self._temporary, self.out_path)
        if self.format == "csv":
            write_json_atomic(self.out_path.with_name(f"{self.out_path.stem}.meta.json"), final_metadata or self.metadata)
        return self.out_path

    def abort(self) -> None:
        if self._parquet is not None:
            try:
                self._parquet.close()
            except Exception:  # noqa: BLE001 - cleaning up after another failure
                pass
        self._temporary.unlink(missing_ok=True)


def write_table_atomic(frame: pd.DataFrame, path: Path, schema: pa.Schema, metadata: dict[str, str] | None = None) -> Path:
    """A companion table (summary, tracks, errors) in the format given by its extension."""
    temporary = _temporary(path)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata(metadata)
    if path.suffix.lower() == ".parquet":
        pq.write_table(table, temporary, compression="zstd")
    else:
        table.to_pandas().to_csv(temporary, index=False)
    os.replace(temporary, path)
    return path


def write_json_atomic(path: Path, data: dict) -> Path:
    temporary = _temporary(path)
    temporary.write_text(json.dumps(data, indent=2, default=str))
    os.replace(temporary, path)
    return path


def read_annotations(path: Path | str) -> pd.DataFrame:
    """Read an output table back with the documented dtypes (CSV included)."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return pq.read_table(path).to_pandas()
    header = pd.read_csv(path, nrows=0).columns
    class_names = tuple(column[len("prob_") :] for column in header if column.startswith("prob_"))
    dtypes = pandas_dtypes(annotation_schema(class_names))
    return pd.read_csv(path, dtype={name: dtype for name, dtype in dtypes.items() if name in header})
