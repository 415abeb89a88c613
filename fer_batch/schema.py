"""The output tables' columns and types: one definition for Parquet, CSV and pandas.

The probability columns follow the class names of the checkpoint in use
(`prob_<emotion>`), so the schema is built for a given label list.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def landmark_columns() -> list[str]:
    return [f"lm_{name}_{axis}" for name in LANDMARK_NAMES for axis in ("x", "y")]


def probability_columns(class_names: tuple[str, ...]) -> list[str]:
    return [f"prob_{name}" for name in class_names]


# Fields of `fer_batch.faces.Faces` that fill several columns each; every other face-table
# column is the `Faces` field of the same name, except `source` and `media_type` (one value
# per batch) and `emotion` and `confidence` (derived from the probabilities).
BOX_COLUMNS: tuple[str, ...] = ("x1", "y1", "x2", "y2")


def column_groups(class_names: tuple[str, ...]) -> dict[str, list[str]]:
    return {"boxes": list(BOX_COLUMNS), "landmarks": landmark_columns(), "probabilities": probability_columns(class_names)}


def annotation_schema(class_names: tuple[str, ...]) -> pa.Schema:
    """One row per face per annotated frame."""
    fields = [
        pa.field("source", pa.string(), nullable=False),
        pa.field("media_type", pa.string(), nullable=False),
        pa.field("frame_index", pa.int64(), nullable=False),
        pa.field("timestamp_s", pa.float64(), nullable=False),
        pa.field("track_id", pa.int32(), nullable=False),
        pa.field("x1", pa.float32(), nullable=False),
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("x2", pa.float32(), nullable=False),
        pa.field("y2", pa.float32(), nullable=False),
        pa.field("det_score", pa.float32(), nullable=False),
        pa.field("detected", pa.bool_(), nullable=False),
        pa.field("frame_width", pa.int32(), nullable=False),
        pa.field("frame_height", pa.int32(), nullable=False),
    ]
    fields += [pa.field(name, pa.float32(), nullable=False) for name in landmark_columns()]
    fields += [pa.field(name, pa.float32(), nullable=False) for name in probability_columns(class_names)]
    fields += [
        pa.field("emotion", pa.string(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
    ]
    return pa.schema(fields)


ERROR_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
    ]
)


def source_summary_schema(class_names: tuple[str, ...]) -> pa.Schema:
    """Per-source summary: counts, dominant emotion and the share of faces per emotion."""
    fields = [
        pa.field("source", pa.string()),
        pa.field("media_type", pa.string()),
        pa.field("status", pa.string()),
        pa.field("frames_read", pa.int64()),
        pa.field("frames_annotated", pa.int64()),
        pa.field("frames_with_faces", pa.int64()),
        pa.field("faces", pa.int64()),
        pa.field("tracks", pa.int64()),
        pa.field("errors", pa.int64()),
        pa.field("dominant_emotion", pa.string()),
    ]
    fields += [pa.field(f"share_{name}", pa.float32()) for name in class_names]
    return pa.schema(fields)


def track_summary_schema(class_names: tuple[str, ...]) -> pa.Schema:
    """Per-track summary: extent in the video, dominant emotion and mean probabilities."""
    fields = [
        pa.field("source", pa.string()),
        pa.field("track_id", pa.int32()),
        pa.field("first_frame", pa.int64()),
        pa.field("last_frame", pa.int64()),
        pa.field("first_timestamp_s", pa.float64()),
        pa.field("last_timestamp_s", pa.float64()),
        pa.field("length", pa.int64()),
        pa.field("dominant_emotion", pa.string()),
    ]
    fields += [pa.field(f"mean_prob_{name}", pa.float32()) for name in class_names]
    return pa.schema(fields)


def pandas_dtypes(schema: pa.Schema) -> dict[str, str]:
    """pandas dtypes matching a schema, used to read CSV output back faithfully."""
    mapping = {
        pa.string(): "string",
        pa.int64(): "int64",
        pa.int32(): "int32",
        pa.float64(): "float64",
        pa.float32(): "float32",
        pa.bool_(): "bool",
    }
    return {field.name: mapping[field.type] for field in schema}


def empty_frame(schema: pa.Schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()
