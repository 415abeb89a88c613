"""Annotated copies of the inputs: boxes, track ids and emotion labels drawn on the media.

Videos are re-decoded and written frame for frame (same fps and frame count as the
source) as H.264 in yuv420p with the index at the front of the file (faststart), so
browsers play them and can seek at once; the encoder is the libx264 inside PyAV's wheel.
When only every n-th frame was annotated, a face's last annotation stays on screen until
its next one, so the overlay does not blink. Images become JPEGs.
"""

from __future__ import annotations

from fractions import Fraction
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


def _target_path(out_dir: Path, source: str, suffix: str) -> Path:
    return out_dir / Path(source).with_suffix(suffix)


def _target(out_dir: Path, source: str, suffix: str) -> Path:
    target = _target_path(out_dir, source, suffix)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def render_image(path: Path, rows: pd.DataFrame, target: Path) -> Path:
    from fer_batch.media import read_image

    bgr = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(target), draw_faces(bgr, rows), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return target


class H264Writer:
    """BGR frames to a browser-playable MP4: H.264, yuv420p, constant frame rate, faststart.

    yuv420p needs even sides, so an odd-sized frame gets one black row or column added.
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int], crf: int = 23) -> None:
        import av

        self._container = av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(25)
        self._stream = self._container.add_stream("libx264", rate=rate)
        width, height = size
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self._frame_class = av.VideoFrame

    def write(self, bgr: np.ndarray) -> None:
        height, width = bgr.shape[:2]
        pad_bottom, pad_right = self._stream.height - height, self._stream.width - width
        if pad_bottom or pad_right:
            bgr = cv2.copyMakeBorder(bgr, 0, pad_bottom, 0, pad_right, cv2.BORDER_CONSTANT, value=0)
        frame = self._frame_class.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():  # flush the encoder's delayed frames
            self._container.mux(packet)
        self._container.close()


def render_video(path: Path, rows: pd.DataFrame, target: Path) -> Path:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise OSError(f"{path}: cannot open video to render")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    temporary = target.with_name(f".{target.name}.partial.mp4")
    by_frame = {index: group for index, group in rows.groupby("frame_index")}
    annotated = sorted(by_frame)
    gap = int(np.max(np.diff(annotated))) if len(annotated) > 1 else 1
    current = rows.iloc[0:0]
    last_annotated = -(10**9)
    index = 0
    writer = None
    try:
        writer = H264Writer(temporary, fps, (width, height))
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
        writer.close()
        writer = None
    finally:
        capture.release()
        if writer is not None:  # an error mid-way: close what was opened, leave no partial file
            try:
                writer.close()
            finally:
                temporary.unlink(missing_ok=True)
    temporary.replace(target)
    return target


def rendered_videos(tables: RunTables, out_dir: Path | str) -> dict[str, Path]:
    """Where `render_run` puts each video source's annotated copy."""
    videos = tables.sources[tables.sources.media_type == "video"].source
    return {source: _target_path(Path(out_dir), source, ".mp4") for source in videos}


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
