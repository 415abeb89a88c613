"""The terminal view of a run's summary tables (per source, per track, errors)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from fer_batch.statistics import RunSummary


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
