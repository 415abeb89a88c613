"""Reading an annotate output back: the face table, its companions and the run's metadata.

Every output file carries one metadata document, `RunMetadata`, as plain JSON: in a
Parquet file under the key `fer_batch` of the file's key-value metadata, and for CSV
output in `<stem>.meta.json` beside the tables. `read_run` returns all of it; `read_table`
is the one function that reads a table back, Parquet or CSV, with the documented dtypes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fer_batch.schema import (
    ERROR_SCHEMA,
    annotation_schema,
    pandas_dtypes,
    source_summary_schema,
    track_summary_schema,
)

METADATA_KEY = "fer_batch"  # Parquet key-value metadata key; its value is the JSON document below
COMPANIONS = ("summary", "tracks", "errors")
# A dataset folder (fer_batch.dataset) keeps its companions as _<kind>.parquet, which readers of
# the folder as one table skip, and its metadata document as _run.json.
DATASET_RUN_DOCUMENT = "_run.json"


@dataclass
class RunMetadata:
    """How an output was made, and where its media are (for reports and renders)."""

    version: str
    weights: str
    weights_sha256: str
    class_names: list[str]
    device: str
    options: dict[str, Any]  # every option by its CLI name (fer_batch.options)
    inputs: list[str] = field(default_factory=list)
    source_paths: dict[str, str] = field(default_factory=dict)  # source name -> absolute path
    elapsed_s: float | None = None
    precision: str = "fp32"  # the encoder's arithmetic as run (fp32, int8); --precision may say auto
    # The checkpoint that classified the faces of videos (defaults.weights_by_media_type), and its
    # arithmetic; empty in outputs of versions that had one checkpoint for both
    video_weights: str = ""
    video_weights_sha256: str = ""
    video_precision: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> "RunMetadata":
        return cls(**json.loads(text))

    def parquet_metadata(self) -> dict[str, str]:
        return {METADATA_KEY: self.to_json()}


def companion_path(out_path: Path, kind: str) -> Path:
    """results.parquet -> results.summary.parquet, results.tracks.parquet, results.errors.parquet;
    a dataset folder results/ -> results/_summary.parquet, ..."""
    if out_path.is_dir():
        return out_path / f"_{kind}.parquet"
    return out_path.with_name(f"{out_path.stem}.{kind}{out_path.suffix}")


def meta_json_path(out_path: Path) -> Path:
    """Where CSV output keeps its metadata document."""
    return out_path.with_name(f"{out_path.stem}.meta.json")


def read_metadata(out_path: Path | str) -> RunMetadata:
    """The metadata document of an output (face table or companion)."""
    out_path = Path(out_path)
    if out_path.is_dir():
        document = out_path / DATASET_RUN_DOCUMENT
        if not document.is_file():
            raise FileNotFoundError(f"{document} is missing: {out_path} is not a complete fer annotate dataset")
        return RunMetadata.from_json(document.read_text())
    if out_path.suffix.lower() == ".parquet":
        stored = pq.read_metadata(out_path).metadata or {}
        if METADATA_KEY.encode() not in stored:
            raise ValueError(f"{out_path}: no fer-batch metadata (not written by fer annotate?)")
        return RunMetadata.from_json(stored[METADATA_KEY.encode()])
    meta = meta_json_path(out_path)
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} is missing; it is written by `fer annotate` beside {out_path.name}")
    return RunMetadata.from_json(meta.read_text())


def read_table(path: Path | str, schema: pa.Schema) -> pd.DataFrame:
    """A table written by fer annotate, Parquet or CSV, as a DataFrame with the schema's dtypes."""
    path = Path(path)
    if path.is_dir():  # a dataset folder: its part files as one table (files starting with _ or . are skipped)
        return pq.read_table(path, schema=schema).to_pandas()
    if path.suffix.lower() == ".parquet":
        return pq.read_table(path).to_pandas()
    dtypes = pandas_dtypes(schema)
    header = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(path, dtype={name: dtype for name, dtype in dtypes.items() if name in header}, keep_default_na=False, na_values=[""])


@dataclass
class RunTables:
    """An annotation output read back: the face table, its companions and metadata."""

    faces: pd.DataFrame
    sources: pd.DataFrame
    tracks: pd.DataFrame
    errors: pd.DataFrame
    metadata: RunMetadata

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.metadata.class_names)


def read_run(out_path: Path | str) -> RunTables:
    """Read `results.parquet|csv` and the summary, tracks and errors tables beside it, or a dataset folder."""
    out_path = Path(out_path)
    if not out_path.is_file() and not out_path.is_dir():
        raise FileNotFoundError(f"annotation output not found: {out_path}")
    metadata = read_metadata(out_path)
    names = tuple(metadata.class_names)
    schemas = {"summary": source_summary_schema(names), "tracks": track_summary_schema(names), "errors": ERROR_SCHEMA}
    companions = {}
    for kind in COMPANIONS:
        path = companion_path(out_path, kind)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; it is written by `fer annotate` beside {out_path.name}")
        companions[kind] = read_table(path, schemas[kind])
    faces = read_table(out_path, annotation_schema(names))
    return RunTables(faces, companions["summary"], companions["tracks"], companions["errors"], metadata)
