"""Summary tables of a run (per source, per track, errors) and their terminal view."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from fer_batch.pipeline import AnnotationRun
from fer_batch.schema import ERROR_SCHEMA, source_summary_schema, track_summary_schema


@dataclass
class RunSummary:
    class_names: tuple[str, ...]
    sources: pd.DataFrame
    tracks: pd.DataFrame
    errors: pd.DataFrame
    elapsed_s: float

    @property
    def totals(self) -> dict[str, float]:
        frames = int(self.sources["frames_annotated"].sum()) if len(self.sources) else 0
        return {
            "sources": len(self.sources),
            "sources_ok": int((self.sources["status"] == "ok").sum()) if len(self.sources) else 0,
            "frames_read": int(self.sources["frames_read"].sum()) if len(self.sources) else 0,
            "frames_annotated": frames,
            "faces": int(self.sources["faces"].sum()) if len(self.sources) else 0,
            "tracks": len(self.tracks),
            "errors": len(self.errors),
            "seconds": self.elapsed_s,
            "frames_per_second": frames / self.elapsed_s if self.elapsed_s > 0 else 0.0,
        }


def summarize(run: AnnotationRun) -> RunSummary:
    names = run.class_names
    source_rows = []
    for stats in run.source_stats:
        counts = stats.emotion_counts if stats.emotion_counts is not None else np.zeros(len(names), np.int64)
        shares = counts / counts.sum() if counts.sum() else np.zeros(len(names))
        source_rows.append(
            {
                "source": stats.source,
                "media_type": stats.media_type,
                "status": stats.status,
                "frames_read": stats.frames_read,
                "frames_annotated": stats.frames_annotated,
                "frames_with_faces": stats.frames_with_faces,
                "faces": stats.faces,
                "tracks": len(stats.track_ids),
                "errors": stats.errors,
                "dominant_emotion": names[int(np.argmax(counts))] if counts.sum() else None,
                **{f"share_{name}": np.float32(share) for name, share in zip(names, shares)},
            }
        )
    track_rows = []
    for track in run.track_stats.values():
        means = track.probability_sum / max(1, track.length)
        track_rows.append(
            {
                "source": track.source,
                "track_id": track.track_id,
                "first_frame": track.first_frame,
                "last_frame": track.last_frame,
                "first_timestamp_s": track.first_timestamp_s,
                "last_timestamp_s": track.last_timestamp_s,
                "length": track.length,
                "dominant_emotion": names[int(np.argmax(track.emotion_counts))],
                **{f"mean_prob_{name}": np.float32(mean) for name, mean in zip(names, means)},
            }
        )
    sources_schema = source_summary_schema(names)
    tracks_schema = track_summary_schema(names)
    sources = pd.DataFrame(source_rows, columns=sources_schema.names)
    tracks = pd.DataFrame(track_rows, columns=tracks_schema.names)
    errors = pd.DataFrame([vars(error) for error in run.errors], columns=ERROR_SCHEMA.names)
    return RunSummary(names, sources, tracks, errors, run.elapsed_s)


def print_summary(summary: RunSummary, console: Console, max_tracks: int = 30) -> None:
    totals = summary.totals
    table = Table(title="Sources", show_lines=False)
    for column in ("source", "type", "status", "frames read", "annotated", "faces", "tracks", "dominant", "shares"):
        table.add_column(column, overflow="fold")
    for row in summary.sources.itertuples(index=False):
        shares = ", ".join(
            f"{name} {getattr(row, f'share_{name}'):.0%}"
            for name in summary.class_names
            if getattr(row, f"share_{name}") >= 0.05
        )
        style = {"ok": None, "partial": "yellow", "error": "red"}.get(row.status)
        table.add_row(
            row.source, row.media_type, row.status, str(row.frames_read), str(row.frames_annotated),
            str(row.faces), str(row.tracks), row.dominant_emotion if isinstance(row.dominant_emotion, str) else "-",
            shares or "-", style=style,
        )
    console.print(table)
    if len(summary.tracks):
        tracks = Table(title=f"Tracks ({len(summary.tracks)}{f', first {max_tracks}' if len(summary.tracks) > max_tracks else ''})")
        for column in ("source", "track", "frames", "length", "dominant", "mean p"):
            tracks.add_column(column, overflow="fold")
        for row in summary.tracks.head(max_tracks).itertuples(index=False):
            mean = getattr(row, f"mean_prob_{row.dominant_emotion}")
            tracks.add_row(
                row.source, str(row.track_id), f"{row.first_frame}-{row.last_frame}", str(row.length),
                row.dominant_emotion, f"{mean:.2f}",
            )
        console.print(tracks)
    if len(summary.errors):
        errors = Table(title=f"Errors ({len(summary.errors)})", style="red")
        for column in ("source", "stage", "message"):
            errors.add_column(column, overflow="fold")
        for row in summary.errors.itertuples(index=False):
            errors.add_row(row.source, row.stage, row.message)
        console.print(errors)
    console.print(
        f"[bold]{totals['sources']}[/] sources ({totals['sources_ok']} ok), {totals['frames_annotated']} frames "
        f"annotated of {totals['frames_read']} read, [bold]{totals['faces']}[/] faces in {totals['tracks']} tracks, "
        f"{totals['errors']} errors, {totals['seconds']:.1f} s ({totals['frames_per_second']:.2f} frames/s)"
    )
