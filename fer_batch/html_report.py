"""A single self-contained HTML report of an annotation run (images inlined, no network).

Sections: the run (inputs, options, weights, version, totals, time), per source
(frames, faces, tracks, emotion shares as a bar), per video one emotion timeline per
track with a face thumbnail, per image the faces with their labels, and the errors.
Large runs stay light: timelines and thumbnails are capped (the cap is stated on the
page) and share bars are plain CSS, so a 1,000-file report loads in seconds.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fer_batch.labels import emotion_color
from fer_batch.results import RunTables

MAX_TIMELINES = 150
MAX_IMAGE_FACES = 300
THUMBNAIL_HEIGHT = 72


# -- images ------------------------------------------------------------------------------
def _data_uri(png_or_jpeg: bytes, kind: str) -> str:
    return f"data:image/{kind};base64,{base64.b64encode(png_or_jpeg).decode()}"


def _face_thumbnail(rgb: np.ndarray, row: pd.Series) -> str:
    height, width = rgb.shape[:2]
    margin_x = 0.15 * (row.x2 - row.x1)
    margin_y = 0.15 * (row.y2 - row.y1)
    x1, y1 = int(max(0, row.x1 - margin_x)), int(max(0, row.y1 - margin_y))
    x2, y2 = int(min(width, row.x2 + margin_x)), int(min(height, row.y2 + margin_y))
    crop = rgb[y1:y2, x1:x2]
    if crop.size == 0:
        return ""
    scale = THUMBNAIL_HEIGHT / crop.shape[0]
    crop = cv2.resize(crop, (max(1, int(crop.shape[1] * scale)), THUMBNAIL_HEIGHT), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return _data_uri(encoded.tobytes(), "jpeg") if ok else ""


def _thumbnails(rows: pd.DataFrame, source_paths: dict[str, str]) -> dict[int, str]:
    """Thumbnails for the given face rows (keyed by row label), reading each source once, in order."""
    from fer_batch.media import MediaError, read_image

    thumbnails: dict[int, str] = {}
    for source, group in rows.groupby("source", sort=False):
        path = source_paths.get(source)
        if not path or not Path(path).is_file():
            continue
        try:
            if group.media_type.iloc[0] == "image":
                rgb = read_image(Path(path))
                for label, row in group.iterrows():
                    thumbnails[label] = _face_thumbnail(rgb, row)
                continue
            capture = cv2.VideoCapture(path)
            position = 0
            for frame_index, frame_rows in group.sort_values("frame_index").groupby("frame_index"):
                while position < frame_index and capture.grab():
                    position += 1
                ok, bgr = capture.read()
                position += 1
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                for label, row in frame_rows.iterrows():
                    thumbnails[label] = _face_thumbnail(rgb, row)
            capture.release()
        except (MediaError, cv2.error, OSError):
            continue  # a source moved or broken since the run: the report just has no picture
    return thumbnails


def _timeline_png(track: pd.DataFrame, class_names: tuple[str, ...]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    track = track.sort_values("timestamp_s")
    figure, axis = plt.subplots(figsize=(5.2, 1.5), dpi=80)
    times = track.timestamp_s.to_numpy()
    values = [track[f"prob_{name}"].to_numpy() for name in class_names]
    if len(times) == 1:
        times = np.array([times[0], times[0] + 0.04])
        values = [np.repeat(value, 2) for value in values]
    axis.stackplot(times, values, colors=[emotion_color(name) for name in class_names], linewidth=0)
    axis.set_xlim(times[0], times[-1])
    axis.set_ylim(0, 1)
    axis.set_yticks([0, 0.5, 1])
    axis.tick_params(labelsize=7)
    axis.set_xlabel("seconds", fontsize=7)
    figure.tight_layout(pad=0.3)
    from io import BytesIO

    buffer = BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return _data_uri(buffer.getvalue(), "png")


# -- HTML --------------------------------------------------------------------------------
def _escape(value: object) -> str:
    return html.escape("" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value))


def _share_bar(row: pd.Series, class_names: tuple[str, ...]) -> str:
    segments = []
    for name in class_names:
        share = float(row.get(f"share_{name}", 0) or 0)
        if share > 0:
            segments.append(
                f'<span style="width:{share * 100:.1f}%;background:{emotion_color(name)}" '
                f'title="{name} {share:.0%}"></span>'
            )
    return f'<div class="bar">{"".join(segments)}</div>' if segments else "–"


def _legend(class_names: tuple[str, ...]) -> str:
    return "".join(
        f'<span class="key"><i style="background:{emotion_color(name)}"></i>{name}</span>' for name in class_names
    )


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{margin-bottom:4px} h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;width:100%} td,th{padding:4px 8px;border-bottom:1px solid #eee;text-align:left}
th{background:#f6f6f6} td.num{text-align:right}
.bar{display:flex;height:12px;width:220px;border-radius:3px;overflow:hidden;background:#eee}
.bar span{display:block;height:100%}
.key{margin-right:12px;font-size:13px} .key i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
.track{display:flex;align-items:center;gap:12px;margin:6px 0;padding:4px;border-bottom:1px solid #f0f0f0}
.track img.thumb{height:72px;border-radius:4px;background:#eee;min-width:48px}
.faces{display:flex;flex-wrap:wrap;gap:10px}
.face{text-align:center;font-size:12px} .face img{height:72px;border-radius:4px;display:block;margin:auto}
.note{color:#777;font-size:13px} .error{color:#b00}
dl.run{display:grid;grid-template-columns:max-content auto;gap:2px 16px;font-size:13px} dl.run dt{font-weight:600}
"""


def build_report(tables: RunTables, out_html: Path | str) -> Path:
    """Write the report of a run read back with `fer_batch.read_run`."""
    out_html = Path(out_html)
    names = tables.class_names
    faces, sources, tracks, errors = tables.faces, tables.sources, tables.tracks, tables.errors
    metadata = tables.metadata
    elapsed = metadata.elapsed_s if metadata.elapsed_s is not None else float("nan")
    options = metadata.options
    inputs = metadata.inputs
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>fer-batch report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>fer-batch report</h1>",
        f"<p class='note'>{_legend(names)}</p>",
        "<h2 id='run'>Run</h2><dl class='run'>",
    ]
    frames_annotated = int(sources.frames_annotated.sum()) if len(sources) else 0
    run_items = [
        ("inputs", ", ".join(inputs) or "–"),
        ("tool version", metadata.version),
        ("weights", f"{metadata.weights} (sha256 {metadata.weights_sha256[:16]}…)"),
        ("device", metadata.device),
        ("sources", f"{len(sources)} ({int((sources.status == 'ok').sum()) if len(sources) else 0} ok)"),
        ("frames annotated", f"{frames_annotated} of {int(sources.frames_read.sum()) if len(sources) else 0} read"),
        ("faces", f"{len(faces)} in {len(tracks)} tracks"),
        ("errors", str(len(errors))),
        ("time taken", f"{elapsed:.1f} s" + (f" ({frames_annotated / elapsed:.2f} frames/s)" if elapsed and elapsed > 0 else "") if not np.isnan(elapsed) else "–"),
        ("options", ", ".join(f"{key}={value}" for key, value in options.items())),
    ]
    parts += [f"<dt>{_escape(key)}</dt><dd>{_escape(value)}</dd>" for key, value in run_items]
    parts.append("</dl>")

    parts.append("<h2 id='sources'>Sources</h2><table><tr><th>source</th><th>type</th><th>status</th><th>frames</th>"
                 "<th>annotated</th><th>faces</th><th>tracks</th><th>dominant</th><th>emotion shares</th></tr>")
    for _, row in sources.iterrows():
        parts.append(
            f"<tr><td>{_escape(row.source)}</td><td>{_escape(row.media_type)}</td>"
            f"<td class='{'error' if row.status != 'ok' else ''}'>{_escape(row.status)}</td>"
            f"<td class='num'>{int(row.frames_read)}</td><td class='num'>{int(row.frames_annotated)}</td>"
            f"<td class='num'>{int(row.faces)}</td><td class='num'>{int(row.tracks)}</td>"
            f"<td>{_escape(row.dominant_emotion)}</td><td>{_share_bar(row, names)}</td></tr>"
        )
    parts.append("</table>")

    # Per video: one timeline per track, longest tracks first, capped for large runs.
    video_tracks = tracks[tracks.source.isin(set(faces[faces.media_type == "video"].source))]
    video_tracks = video_tracks.sort_values(["source", "length"], ascending=[True, False])
    shown_tracks = video_tracks.head(MAX_TIMELINES)
    best_rows = _best_rows(faces, shown_tracks)
    thumbnails = _thumbnails(faces.loc[list(best_rows.values())], metadata.source_paths) if best_rows else {}
    parts.append("<h2 id='videos'>Videos: emotion timelines per track</h2>")
    if len(video_tracks) > len(shown_tracks):
        parts.append(f"<p class='note'>Showing the {len(shown_tracks)} longest-running tracks of {len(video_tracks)}; "
                     "all tracks are in the tracks table.</p>")
    if not len(video_tracks):
        parts.append("<p class='note'>No faces in videos.</p>")
    for source, group in shown_tracks.groupby("source", sort=True):
        parts.append(f"<details open><summary><b>{_escape(source)}</b> — {len(group)} tracks</summary>")
        source_faces = faces[faces.source == source]
        for _, track in group.sort_values("track_id").iterrows():
            rows = source_faces[source_faces.track_id == track.track_id]
            thumbnail = thumbnails.get(best_rows.get((source, int(track.track_id))), "")
            parts.append(
                f"<div class='track' id='track-{_escape(source)}-{int(track.track_id)}'>"
                f"<img class='thumb' src='{thumbnail}' alt='track {int(track.track_id)}'>"
                f"<div><b>track {int(track.track_id)}</b><br>frames {int(track.first_frame)}–{int(track.last_frame)}"
                f" ({track.first_timestamp_s:.2f}–{track.last_timestamp_s:.2f} s)<br>"
                f"mostly <b style='color:{emotion_color(track.dominant_emotion)}'>{_escape(track.dominant_emotion)}</b>,"
                f" {int(track.length)} frames</div>"
                f"<img src='{_timeline_png(rows, names)}' alt='timeline of track {int(track.track_id)}'></div>"
            )
        parts.append("</details>")

    image_faces = faces[faces.media_type == "image"]
    shown_faces = image_faces.head(MAX_IMAGE_FACES)
    image_thumbnails = _thumbnails(shown_faces, metadata.source_paths) if len(shown_faces) else {}
    parts.append("<h2 id='images'>Images: faces and labels</h2>")
    if len(image_faces) > len(shown_faces):
        parts.append(f"<p class='note'>Showing {len(shown_faces)} of {len(image_faces)} image faces.</p>")
    if not len(image_faces):
        parts.append("<p class='note'>No faces in images.</p>")
    for source, group in shown_faces.groupby("source", sort=True):
        parts.append(f"<h3>{_escape(source)}</h3><div class='faces'>")
        for label, row in group.iterrows():
            parts.append(
                f"<div class='face'><img src='{image_thumbnails.get(label, '')}' alt='face {int(row.track_id)}'>"
                f"#{int(row.track_id)} <b style='color:{emotion_color(row.emotion)}'>{_escape(row.emotion)}</b>"
                f" {row.confidence:.0%}</div>"
            )
        parts.append("</div>")

    parts.append(f"<h2 id='errors'>Errors ({len(errors)})</h2>")
    if len(errors):
        parts.append("<table><tr><th>source</th><th>stage</th><th>message</th></tr>")
        parts += [
            f"<tr><td>{_escape(row.source)}</td><td>{_escape(row.stage)}</td><td>{_escape(row.message)}</td></tr>"
            for _, row in errors.iterrows()
        ]
        parts.append("</table>")
    else:
        parts.append("<p class='note'>No errors.</p>")
    parts.append("</body></html>")
    out_html.parent.mkdir(parents=True, exist_ok=True)
    temporary = out_html.with_name(f".{out_html.name}.partial")
    temporary.write_text("\n".join(parts), encoding="utf-8")
    temporary.replace(out_html)
    return out_html


def _best_rows(faces: pd.DataFrame, tracks: pd.DataFrame) -> dict[tuple[str, int], int]:
    """For each shown track, the row label of its most confidently detected face (for the thumbnail)."""
    if not len(tracks):
        return {}
    keyed = faces.rename_axis("row").reset_index().merge(tracks[["source", "track_id"]], on=["source", "track_id"])
    keyed = keyed.sort_values("det_score", ascending=False).drop_duplicates(["source", "track_id"])
    return {(source, int(track)): row for source, track, row in zip(keyed.source, keyed.track_id, keyed.row)}
