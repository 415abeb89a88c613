"""A single self-contained HTML report of an annotation run (images inlined, no network).

Sections: an overview (emotion share per source, faces per frame over time per video), the
run (inputs, totals, weights, options as a table), per source (frames, faces, tracks,
emotion shares as a bar), per video its faces per frame and its tracks on one shared time
axis (one row per track with a face thumbnail; each face a mark coloured by its emotion, so a
one-frame track is a short mark, not a band) beside the annotated video when `--render`
made one: clicking a row seeks the video, and a cursor follows its playback. Then per
image the faces with their labels, and the errors. Large runs stay light: rows and
thumbnails are capped (the cap is stated on the page) and timelines are inline SVG.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fer_batch.labels import emotion_color
from fer_batch.report import plural
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


def _nice_step(duration: float) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if duration / step <= 10:
            return step
    return 7200.0


def _axis(duration: float) -> str:
    """Ticks and labels (seconds) of a video's shared time axis, as HTML so text keeps its shape."""
    step = _nice_step(duration)
    ticks = []
    for tick in np.arange(0, duration + 1e-9, step):
        label = f"{tick:g}" if step < 60 else f"{int(tick // 60)}:{int(tick % 60):02d}"
        ticks.append(f"<span style='left:{tick / duration * 100:.2f}%'>{label}</span>")
    return f"<div class='ticks'>{''.join(ticks)}</div>"


def _track_svg(rows: pd.DataFrame, duration: float, frame_interval: float) -> str:
    """One mark per face of the track at its time, coloured by its emotion, shaded by confidence."""
    width = max(frame_interval / duration * 1000, 2.5)  # a one-frame track stays visible
    marks = [
        f"<rect x='{t / duration * 1000:.2f}' y='2' width='{width:.2f}' height='14' fill='{emotion_color(emotion)}' "
        f"fill-opacity='{0.35 + 0.65 * confidence:.2f}'><title>{t:.2f} s {emotion} {confidence:.0%}</title></rect>"
        for t, emotion, confidence in zip(rows.timestamp_s, rows.emotion, rows.confidence)
    ]
    return f"<svg class='lane' viewBox='0 0 1000 18' preserveAspectRatio='none'>{''.join(marks)}</svg>"


def _faces_per_frame_svg(source_faces: pd.DataFrame, duration: float, frame_interval: float) -> tuple[str, int]:
    """Faces per annotated frame over the video's time, on the same axis as the track rows."""
    counts = source_faces.groupby("timestamp_s").size()
    peak = max(int(counts.max()), 1) if len(counts) else 1
    width = max(frame_interval / duration * 1000, 1.0)
    bars = "".join(
        f"<rect x='{t / duration * 1000:.2f}' y='{30 - 28 * n / peak:.2f}' width='{width:.2f}' "
        f"height='{28 * n / peak:.2f}' fill='#8aa'><title>{t:.2f} s: {n} faces</title></rect>"
        for t, n in counts.items()
    )
    return f"<svg class='count' viewBox='0 0 1000 30' preserveAspectRatio='none'>{bars}</svg>", peak


SCRIPT = """
document.querySelectorAll('.video-block').forEach(function (block) {
  var video = block.querySelector('video');
  var duration = parseFloat(block.dataset.duration);
  block.querySelectorAll('.lanes svg').forEach(function (lane) {
    lane.addEventListener('click', function (event) {
      var box = lane.getBoundingClientRect();
      var seconds = (event.clientX - box.left) / box.width * duration;
      block.style.setProperty('--t', seconds / duration);
      if (video) { video.currentTime = seconds; }
    });
  });
  if (video) {
    video.addEventListener('timeupdate', function () {
      block.style.setProperty('--t', Math.min(1, video.currentTime / duration));
    });
    video.addEventListener('loadedmetadata', function () { block.dataset.videoSeconds = video.duration.toFixed(2); });
  }
});
document.body.dataset.trackRows = Array.from(document.querySelectorAll('.track')).filter(function (row) {
  return row.offsetHeight > 0;
}).length;
"""


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


MAX_OVERVIEW_ROWS = 30


def _share_segments(counts: pd.Series, total: int) -> str:
    """A wide stacked bar of emotion shares, each segment labelled when it is wide enough to read."""
    segments = []
    for name, count in counts.items():
        share = count / total
        label = f"{share:.0%}" if share >= 0.08 else ""
        segments.append(f"<span class='seg' style='width:{share * 100:.2f}%;background:{emotion_color(name)}' "
                        f"title='{_escape(name)} {share:.1%} ({count})'>{label}</span>")
    return f"<div class='share'>{''.join(segments)}</div>"


def _overview(faces: pd.DataFrame, class_names: tuple[str, ...]) -> str:
    """Emotion share per source (all faces first) and faces per frame over time per video, at a glance."""
    if not len(faces):
        return "<h2 id='overview'>Overview</h2><p class='note'>No faces were found in this run.</p>"
    parts = ["<h2 id='overview'>Overview</h2><h3>Emotion share per source</h3><div class='overview'>"]
    per_source = faces.groupby("source").emotion.value_counts().unstack(fill_value=0)
    per_source = per_source.reindex(columns=[name for name in class_names if name in per_source.columns])
    totals = per_source.sum(axis=1).sort_values(ascending=False)
    rows = [("all sources", per_source.sum(axis=0))] + [(source, per_source.loc[source]) for source in totals.index[:MAX_OVERVIEW_ROWS]]
    for label, counts in rows:
        total = int(counts.sum())
        parts.append(f"<div class='orow'><span class='olabel' title='{_escape(label)}'>{_escape(label)}</span>"
                     f"{_share_segments(counts[counts > 0], total)}<span class='ocount'>{plural(total, 'face')}</span></div>")
    parts.append("</div>")
    if len(totals) > MAX_OVERVIEW_ROWS:
        parts.append(f"<p class='note'>The {MAX_OVERVIEW_ROWS} sources with most faces of {len(totals)}.</p>")
    video_faces = faces[faces.media_type == "video"]
    if len(video_faces):
        parts.append("<h3>Faces per frame over time</h3><div class='overview'>")
        busiest = video_faces.source.value_counts().index[:MAX_OVERVIEW_ROWS]
        for source in sorted(busiest):
            source_faces = video_faces[video_faces.source == source]
            times = np.unique(source_faces.timestamp_s.to_numpy())
            frame_interval = float(np.median(np.diff(times))) if len(times) > 1 else 0.04
            duration = max(float(times.max()) + frame_interval, 1e-3)
            svg, peak = _faces_per_frame_svg(source_faces, duration, frame_interval)
            parts.append(f"<div class='orow'><span class='olabel' title='{_escape(source)}'>{_escape(source)}</span>{svg}"
                         f"<span class='ocount'>up to {peak} over {duration:.1f} s</span></div>")
        parts.append("</div>")
    return "".join(parts)


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{margin-bottom:4px} h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;width:100%} td,th{padding:4px 8px;border-bottom:1px solid #eee;text-align:left}
th{background:#f6f6f6} td.num{text-align:right}
.bar{display:flex;height:12px;width:min(220px,18vw);border-radius:3px;overflow:hidden;background:#eee}
.bar span{display:block;height:100%}
.key{margin-right:12px;font-size:13px} .key i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
.track{display:flex;align-items:center;gap:12px;margin:6px 0;padding:4px;border-bottom:1px solid #f0f0f0}
.track img.thumb{height:72px;border-radius:4px;background:#eee;min-width:48px}
.faces{display:flex;flex-wrap:wrap;gap:10px}
.face{text-align:center;font-size:12px} .face img{height:72px;border-radius:4px;display:block;margin:auto}
.note{color:#777;font-size:13px} .error{color:#b00}
dl.run{display:grid;grid-template-columns:max-content auto;gap:2px 16px;font-size:13px} dl.run dt{font-weight:600}
table.options{width:auto} table.options td{font-family:ui-monospace,monospace;font-size:12px}
.video-block{--label:250px;--t:0;margin:12px 0 24px}
.video-block video{max-width:100%;max-height:420px;display:block;margin-bottom:8px;background:#000}
.lanes{position:relative}
.lanes .track{display:grid;grid-template-columns:var(--label) 1fr;align-items:center;gap:0;margin:0;padding:2px 0;border-bottom:1px solid #f3f3f3}
.lanes .track img.thumb{height:40px;min-width:32px;margin-right:8px;vertical-align:middle}
.lanes .who{font-size:12px;display:flex;align-items:center;overflow:hidden;white-space:nowrap}
.lanes svg{width:100%;height:18px;display:block;cursor:pointer;background:#fafafa}
.lanes .ticks{position:relative;height:20px;border-top:1px solid #888}
.lanes .ticks span{position:absolute;top:2px;transform:translateX(-50%);font-size:11px;color:#555}
.lanes .ticks span:first-child{transform:none}
.lanes .axis-row{display:grid;grid-template-columns:var(--label) 1fr;font-size:12px;color:#555}
.lanes svg.count{height:30px;background:none;cursor:default}
.overview{display:grid;gap:4px;margin:8px 0 16px}
.orow{display:grid;grid-template-columns:minmax(120px,250px) 1fr 150px;align-items:center;gap:10px;font-size:13px}
.olabel{overflow:hidden;text-overflow:ellipsis;white-space:nowrap} .ocount{color:#555;font-size:12px}
.share{display:flex;height:20px;border-radius:3px;overflow:hidden;background:#eee}
.share .seg{display:block;height:100%;color:#fff;font-size:11px;line-height:20px;text-align:center;overflow:hidden;
  text-shadow:0 0 2px #000}
.orow svg.count{width:100%;height:30px;background:#fafafa}
.lanes .cursor{position:absolute;top:0;bottom:0;width:2px;background:#d22;pointer-events:none;
  left:calc(var(--label) + var(--t) * (100% - var(--label)))}
"""


def build_report(tables: RunTables, out_html: Path | str, videos: dict[str, Path] | None = None) -> Path:
    """Write the report of a run read back with `fer_batch.read_run`; `videos` maps a video source
    to its annotated render, which the page shows beside the timelines (linked, not embedded)."""
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
        _overview(faces, names),
        "<h2 id='run'>Run</h2><dl class='run'>",
    ]
    frames_annotated = int(sources.frames_annotated.sum()) if len(sources) else 0
    run_items = [
        ("inputs", ", ".join(inputs) or "–"),
        ("tool version", metadata.version),
        ("weights", f"{metadata.weights} (sha256 {metadata.weights_sha256[:16]}…)"),
        *([("video weights", f"{metadata.video_weights} (sha256 {metadata.video_weights_sha256[:16]}…)")]
          if metadata.video_weights else []),
        ("device", metadata.device),
        ("sources", f"{len(sources)} ({int((sources.status == 'ok').sum()) if len(sources) else 0} ok)"),
        ("frames annotated", f"{frames_annotated} of {int(sources.frames_read.sum()) if len(sources) else 0} read"),
        ("faces", f"{len(faces)} in {len(tracks)} tracks"),
        ("errors", str(len(errors))),
        ("time taken", f"{elapsed:.1f} s" + (f" ({frames_annotated / elapsed:.2f} frames/s)" if elapsed and elapsed > 0 else "") if not np.isnan(elapsed) else "–"),
    ]
    parts += [f"<dt>{_escape(key)}</dt><dd>{_escape(value)}</dd>" for key, value in run_items]
    parts.append("</dl><h3>Options</h3><table class='options'><tr><th>option</th><th>value</th></tr>")
    parts += [f"<tr><td>{_escape(key)}</td><td>{_escape(value)}</td></tr>" for key, value in options.items()]
    parts.append("</table>")

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
    parts.append("<h2 id='videos'>Videos: tracks on the video's time axis</h2>")
    if len(video_tracks) > len(shown_tracks):
        parts.append(f"<p class='note'>Showing the {len(shown_tracks)} longest-running tracks of {len(video_tracks)}; "
                     "all tracks are in the tracks table.</p>")
    if not (sources.media_type == "video").any():
        parts.append("<p class='note'>No videos in this run.</p>")
    elif not len(video_tracks):
        parts.append("<p class='note'>No faces in videos.</p>")
    elif not videos:
        parts.append("<p class='note'>Run with <code>--render DIR</code> to see each annotated video here, "
                     "linked to its timelines.</p>")
    for source, group in shown_tracks.groupby("source", sort=True):
        source_faces = faces[faces.source == source]
        times = np.unique(source_faces.timestamp_s.to_numpy())
        frame_interval = float(np.median(np.diff(times))) if len(times) > 1 else 0.04
        duration = max(float(times.max()) + frame_interval, 1e-3) if len(times) else 1.0
        parts.append(f"<h3>{_escape(source)} — {plural(len(group), 'track')}</h3>"
                     f"<div class='video-block' data-duration='{duration:.4f}'>")
        video = (videos or {}).get(source)
        if video is not None:
            link = os.path.relpath(video, out_html.parent)
            parts.append(f"<video controls preload='metadata' src='{_escape(link)}'></video>")
        parts.append("<div class='lanes'><div class='axis-row'><span>seconds</span>" + _axis(duration) + "</div>")
        counts_svg, peak = _faces_per_frame_svg(source_faces, duration, frame_interval)
        parts.append(f"<div class='axis-row count-row'><span>faces per frame (up to {peak})</span>{counts_svg}</div>")
        for _, track in group.sort_values("first_frame").iterrows():
            rows = source_faces[source_faces.track_id == track.track_id]
            thumbnail = thumbnails.get(best_rows.get((source, int(track.track_id))), "")
            parts.append(
                f"<div class='track' id='track-{_escape(source)}-{int(track.track_id)}'>"
                f"<div class='who'><img class='thumb' src='{thumbnail}' alt='track {int(track.track_id)}'>"
                f"<span><b>#{int(track.track_id)}</b> mostly "
                f"<b style='color:{emotion_color(track.dominant_emotion)}'>{_escape(track.dominant_emotion)}</b>, "
                f"{plural(int(track.length), 'frame')}<br>{track.first_timestamp_s:.2f}–{track.last_timestamp_s:.2f} s</span></div>"
                f"{_track_svg(rows, duration, frame_interval)}</div>"
            )
        parts.append("<div class='cursor'></div></div></div>")

    image_faces = faces[faces.media_type == "image"]
    shown_faces = image_faces.head(MAX_IMAGE_FACES)
    image_thumbnails = _thumbnails(shown_faces, metadata.source_paths) if len(shown_faces) else {}
    parts.append("<h2 id='images'>Images: faces and labels</h2>")
    if len(image_faces) > len(shown_faces):
        parts.append(f"<p class='note'>Showing {len(shown_faces)} of {len(image_faces)} image faces.</p>")
    if not (sources.media_type == "image").any():
        parts.append("<p class='note'>No images in this run.</p>")
    elif not len(image_faces):
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
    parts.append(f"<script>{SCRIPT}</script></body></html>")
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
