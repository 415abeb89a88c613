"""The terminal view of a run's summary tables (per source, per track, errors).

On a terminal the tables are Rich tables; piped or redirected, Rich would squeeze them
into 80 columns and break file names every few characters, so the same rows are
written as plain tab-separated lines instead. `summary_document` is the `--json` form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fer_batch.statistics import RunSummary


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """'1 source', '2 sources', '0 frames'."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


def totals_line(summary: RunSummary) -> str:
    totals = summary.totals
    return (
        f"{plural(totals['files_found'], 'file')} found = {totals['files_annotated']} annotated + "
        f"{totals['files_failed']} failed + {totals['files_skipped']} skipped; "
        f"{plural(totals['sources'], 'source')} ({totals['sources_ok']} ok), "
        f"{plural(totals['frames_annotated'], 'frame')} annotated of {totals['frames_read']} read, "
        f"{plural(totals['faces'], 'face')} in {plural(totals['tracks'], 'track')}, "
        f"{plural(totals['errors'], 'error')}, {totals['seconds']:.1f} s ({totals['frames_per_second']:.2f} frames/s)"
    )


def _shares(row: Any, class_names: tuple[str, ...]) -> str:
    return ", ".join(
        f"{name} {getattr(row, f'share_{name}'):.0%}" for name in class_names if getattr(row, f"share_{name}") >= 0.05
    )


def _print_plain(summary: RunSummary, console: Console, max_tracks: int) -> None:
    def line(*cells: object) -> None:  # written as is: Rich would expand the tabs into spaces
        if not console.quiet:
            console.file.write("\t".join(str(cell) for cell in cells) + "\n")

    line("source", "type", "status", "frames read", "annotated", "faces", "tracks", "dominant", "shares")
    for row in summary.sources.itertuples(index=False):
        dominant = row.dominant_emotion if isinstance(row.dominant_emotion, str) else "-"
        line(row.source, row.media_type, row.status, row.frames_read, row.frames_annotated, row.faces, row.tracks,
             dominant, _shares(row, summary.class_names) or "-")
    if len(summary.tracks):
        line()
        line("source", "track", "frames", "length", "dominant", "mean p")
        for row in summary.tracks.head(max_tracks).itertuples(index=False):
            mean = getattr(row, f"mean_prob_{row.dominant_emotion}")
            line(row.source, row.track_id, f"{row.first_frame}-{row.last_frame}", row.length, row.dominant_emotion,
                 f"{mean:.2f}")
        if len(summary.tracks) > max_tracks:
            line(f"... {len(summary.tracks) - max_tracks} more tracks in the tracks table")
    if len(summary.errors):
        line()
        line("source", "stage", "message")
        for row in summary.errors.itertuples(index=False):
            line(row.source, row.stage, row.message)
    line(totals_line(summary))


def print_summary(summary: RunSummary, console: Console, max_tracks: int = 30) -> None:
    if not console.is_terminal:
        _print_plain(summary, console, max_tracks)
        return
    table = Table(title="Sources", show_lines=False)
    for column in ("source", "type", "status", "frames read", "annotated", "faces", "tracks", "dominant", "shares"):
        table.add_column(column, overflow="fold")
    for row in summary.sources.itertuples(index=False):
        shares = _shares(row, summary.class_names)
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
    console.print(totals_line(summary), highlight=False)


def summary_document(summary: RunSummary, outputs: dict[str, Path]) -> dict[str, Any]:
    """The run's totals, per-source rows, errors and output paths as plain JSON types (`--json`)."""
    sources = summary.sources.astype(object).where(summary.sources.notna(), None)
    errors = summary.errors.astype(object).where(summary.errors.notna(), None)
    return {
        "totals": {key: (float(value) if isinstance(value, float) else int(value)) for key, value in summary.totals.items()},
        "sources": sources.to_dict(orient="records"),
        "errors": errors.to_dict(orient="records"),
        "outputs": {name: str(path) for name, path in outputs.items()},
    }
