"""Writers for the annotation table and its companion tables (Parquet or CSV).

Face batches are turned into Arrow record batches column by column and streamed in
row groups, so a long run never holds the table in memory. Everything is written under
a temporary name in the output folder and renamed at the end: an interrupted run never
leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fer_batch import defaults
from fer_batch.faces import Faces
from fer_batch.results import COMPANIONS, RunMetadata, companion_path, meta_json_path
from fer_batch.schema import annotation_schema, column_groups


class OutputPathError(ValueError):
    """An --out path the tool cannot write: a usage error, reported before any work."""


def is_dataset_path(path: Path | str) -> bool:
    """A folder output: a trailing slash, an existing folder, or a name without a file extension."""
    return str(path).endswith(("/", os.sep)) or Path(path).is_dir() or Path(path).suffix == ""


def check_output_path(path: Path) -> str:
    """The output format ('parquet', 'csv', or 'dataset' for a folder) from the path, or a clear error."""
    if is_dataset_path(path):
        if path.exists() and not path.is_dir():
            raise OutputPathError(f"output path {path} is a file; a dataset output is a directory")
        return "dataset"
    suffix = path.suffix.lower()
    if suffix not in defaults.OUTPUT_SUFFIXES:
        raise OutputPathError(
            f"unsupported output extension '{path.suffix or '(none)'}' for {path}; use .parquet or .csv"
        )
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise OutputPathError(f"output folder {parent} is not a directory")
    check_writable(parent)
    return suffix[1:]


def check_writable(folder: Path) -> None:
    """Create `folder` if needed and write a probe file in it, so a read-only disk, a missing
    permission or a pseudo-filesystem is an error before any work, not after hours of it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".fer-batch-write-test-"):
            pass
    except OSError as error:
        raise OutputPathError(f"output folder {folder} is not writable: {error.strerror or error}") from error


def temporary_path(path: Path) -> Path:
    """Where `path` is written before its rename into place: hidden, and named by this process."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def remove_stale_temporaries(folder: Path, name: str = "*") -> list[Path]:
    """Temporary files (`temporary_path`) in `folder` of earlier runs writing `name` (any file by
    default) whose process is gone, killed with -9: removed, so they do not pile up. Those of a
    live process are left alone."""
    removed = []
    for leftover in folder.glob(f".{name}.partial-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _strings(indices: np.ndarray, values: list[str] | tuple[str, ...]) -> pa.Array:
    """A string column from an index array into a few distinct values, without a Python object per row."""
    return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(values, pa.string())).cast(pa.string())


def faces_to_record_batch(faces: Faces, class_names: tuple[str, ...]) -> pa.RecordBatch:
    """The face-table rows of a classified batch, built from its arrays (no per-row objects)."""
    schema = annotation_schema(class_names)
    count = len(faces)
    columns: dict[str, object] = {}
    for field_name, names in column_groups(class_names).items():
        values = getattr(faces, field_name).reshape(count, len(names))
        columns.update({name: values[:, index] for index, name in enumerate(names)})
    best = faces.probabilities.argmax(axis=1)
    columns["emotion"] = _strings(best, class_names)
    columns["confidence"] = faces.probabilities[np.arange(count), best]
    columns["source"] = _strings(np.zeros(count, np.int32), [faces.source])
    columns["media_type"] = _strings(np.zeros(count, np.int32), [faces.media_type])
    arrays = []
    for field in schema:
        value = columns[field.name] if field.name in columns else getattr(faces, field.name)
        arrays.append(value if isinstance(value, pa.Array) else pa.array(np.asarray(value), field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def faces_to_table(batches: list[Faces], class_names: tuple[str, ...]) -> pa.Table:
    schema = annotation_schema(class_names)
    return pa.Table.from_batches([faces_to_record_batch(faces, class_names) for faces in batches], schema=schema)


class AnnotationWriter:
    """Streams classified `Faces` batches to Parquet or CSV; `commit()` adds the metadata and renames into place."""

    def __init__(self, out_path: Path, class_names: tuple[str, ...], rows_per_group: int = 20_000) -> None:
        self.out_path = Path(out_path)
        self.format = check_output_path(self.out_path)
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.class_names = class_names
        self.schema = annotation_schema(class_names)
        self.rows_per_group = rows_per_group
        self.rows_written = 0
        self._buffer: list[pa.RecordBatch] = []
        self._buffered_rows = 0
        self._temporary = temporary_path(self.out_path)
        for companion in (self.out_path, *(companion_path(self.out_path, kind) for kind in COMPANIONS)):
            remove_stale_temporaries(companion.parent, companion.name)
        self._parquet: pq.ParquetWriter | None = None
        self._csv_started = False

    def write(self, faces: Faces) -> None:
        if len(faces) == 0:
            return
        self._buffer.append(faces_to_record_batch(faces, self.class_names))
        self._buffered_rows += len(faces)
        if self._buffered_rows >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        table = pa.Table.from_batches(self._buffer, schema=self.schema) if self._buffer else self.schema.empty_table()
        self._buffer, self._buffered_rows = [], 0
        if self.format == "parquet":
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self._temporary, self.schema, compression="zstd")
            self._parquet.write_table(table)
        else:
            write_csv(table.to_pandas(), self._temporary, append=self._csv_started)
            self._csv_started = True
        self.rows_written += table.num_rows

    def commit(self, metadata: RunMetadata) -> Path:
        """Finish, store the metadata document (footer or meta.json) and rename into place."""
        if self._buffer or self.rows_written == 0:
            self._flush()
        if self._parquet is not None:
            self._parquet.add_key_value_metadata(metadata.parquet_metadata())
            self._parquet.close()
        os.replace(self._temporary, self.out_path)
        if self.format == "csv":
            write_text_atomic(meta_json_path(self.out_path), metadata.to_json())
        return self.out_path

    def abort(self) -> None:
        discard_partial(self._parquet, self._temporary)


def discard_partial(writer: pq.ParquetWriter | None, temporary: Path | None) -> None:
    """After a failure: close a Parquet writer if one is open, and delete its temporary file."""
    if writer is not None:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - cleaning up after another failure
            pass
    if temporary is not None:
        temporary.unlink(missing_ok=True)


def write_table_atomic(frame: pd.DataFrame, path: Path, schema: pa.Schema, metadata: RunMetadata) -> Path:
    """A companion table (summary, tracks, errors) in the format given by its extension."""
    temporary = temporary_path(path)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    if path.suffix.lower() == ".parquet":
        pq.write_table(table.replace_schema_metadata(metadata.parquet_metadata()), temporary, compression="zstd")
    else:
        write_csv(table.to_pandas(), temporary)
    os.replace(temporary, path)
    return path


def write_csv(frame: pd.DataFrame, path: Path, append: bool = False) -> None:
    """A table as CSV that reads back as written: lines end in CRLF (RFC 4180), so a text field
    holding a carriage return (a file name, an error message) is quoted. With pandas' default
    line end, \\n, such a field was written bare and split its row when read back."""
    frame.to_csv(path, mode="a" if append else "w", header=not append, index=False, lineterminator="\r\n")


def write_text_atomic(path: Path, text: str) -> Path:
    temporary = temporary_path(path)
    temporary.write_text(text)
    os.replace(temporary, path)
    return path
