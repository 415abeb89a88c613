"""Annotated copies of the inputs: boxes, track ids and emotion labels drawn on the media.

Videos are re-decoded and written frame for frame (same fps and frame count as the
source); when only every n-th frame was annotated, a face's last annotation stays on
screen until its next one, so the overlay does not blink. Images become JPEGs.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fer_batch.results import RunTables
from fer_batch.labels import emotion_color


def _bgr(hex_color: str) -> tuple[int, int, int]:
    value = hex_color.lstrip("#")
    red, green, blue = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return blue, green, red


def draw_faces(bgr: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
    """Draw each face's box and `#track emotion confidence` label, coloured by emotion."""
    height, width = bgr.shape[:2]
    thickness = max(1, round(min(height, width) / 400))
    font_scale = max(0.4, min(height, width) / 1400)
    for row in rows.itertuples(index=False):
        color = _bgr(emotion_color(row.emotion))
        top_left = (int(round(row.x1)), int(round(row.y1)))
        cv2.rectangle(bgr, top_left, (int(round(row.x2)), int(round(row.y2))), color, thickness, cv2.LINE_AA)
        label = f"#{row.track_id} {row.emotion} {row.confidence:.0%}"
        (text_width, text_height), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        y = max(text_height + baseline, top_left[1])
        cv2.rectangle(bgr, (top_left[0], y - text_height - baseline), (top_left[0] + text_width, y), color, -1)
        cv2.putText(bgr, label, (top_left[0], y - baseline), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return bgr


def _target(out_dir: Path, source: str, suffix: str) -> Path:
    target = out_dir / Path(source).with_suffix(suffix)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def render_image(path: Path, rows: pd.DataFrame, target: Path) -> Path:
    from fer_batch.media import read_image

    bgr = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(target), draw_faces(bgr, rows), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return target


def render_video(path: Path, rows: pd.DataFrame, target: Path) -> Path:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise OSError(f"{path}: cannot open video to render")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    temporary = target.with_name(f".{target.name}.partial.mp4")
    writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    by_frame = {index: group for index, group in rows.groupby("frame_index")}
    annotated = sorted(by_frame)
    gap = int(np.max(np.diff(annotated))) if len(annotated) > 1 else 1
    current = rows.iloc[0:0]
    last_annotated = -(10**9)
    index = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            if index in by_frame:
                current, last_annotated = by_frame[index], index
            elif index - last_annotated >= gap:
                current = rows.iloc[0:0]
            writer.write(draw_faces(bgr, current))
            index += 1
    finally:
        capture.release()
        writer.release()
    temporary.replace(target)
    return target


def render_run(tables: RunTables, out_dir: Path | str) -> tuple[list[Path], list[tuple[str, str]]]:
    """An annotated copy of every source that was read, under `out_dir` with its relative path.

    Returns the files written and (source, reason) for sources that could not be rendered.
    """
    out_dir = Path(out_dir)
    written, failed = [], []
    paths = tables.metadata.source_paths
    for _, source in tables.sources.iterrows():
        path = paths.get(source.source)
        if source.frames_read == 0:
            continue
        if not path or not Path(path).is_file():
            failed.append((source.source, "source file not found"))
            continue
        rows = tables.faces[tables.faces.source == source.source]
        try:
            if source.media_type == "image":
                written.append(render_image(Path(path), rows, _target(out_dir, source.source, ".jpg")))
            else:
                written.append(render_video(Path(path), rows, _target(out_dir, source.source, ".mp4")))
        except Exception as error:  # noqa: BLE001 - one broken source must not stop the others
            failed.append((source.source, f"{type(error).__name__}: {error}"))
    return written, failed
