"""Per-source and per-track statistics of a run: a sink of the annotate pipeline.

It reads the same events the writer does (classified `Faces` batches and the start and
end of each source) and builds the summary, tracks and errors tables from arrays, a few
numbers per track and per source, so its memory does not grow with the number of faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fer_batch.faces import Faces
from fer_batch.media import MediaSource
from fer_batch.schema import ERROR_SCHEMA, source_summary_schema, track_summary_schema


@dataclass(frozen=True)
class ErrorRecord:
    source: str
    stage: str
    message: str


@dataclass
class _TrackTally:
    track_id: int
    first_frame: int
    first_timestamp_s: float
    last_frame: int = 0
    last_timestamp_s: float = 0.0
    length: int = 0
    probability_sum: np.ndarray | None = None
    emotion_counts: np.ndarray | None = None


@dataclass
class _SourceTally:
    source: MediaSource
    classes: int
    frames_read: int = 0
    frames_annotated: int = 0
    faces: int = 0
    errors: list[ErrorRecord] = field(default_factory=list)
    emotion_counts: np.ndarray = None  # type: ignore[assignment]
    frames_with_faces: set[int] = field(default_factory=set)
    tracks: dict[int, _TrackTally] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.emotion_counts = np.zeros(self.classes, np.int64)

    @property
    def status(self) -> str:
        """ok without errors; partial when frames were annotated before an error; error otherwise."""
        if not self.errors:
            return "ok"
        return "partial" if self.frames_annotated > 0 else "error"


@dataclass
class RunSummary:
    class_names: tuple[str, ...]
    sources: pd.DataFrame
    tracks: pd.DataFrame
    errors: pd.DataFrame
    elapsed_s: float
    # Frames this process annotated, when not all of them (a resumed dataset run skips finished
    # sources): the frame rate counts these, not the whole output's.
    frames_this_run: int | None = None

    @property
    def totals(self) -> dict[str, float]:
        frames = int(self.sources["frames_annotated"].sum()) if len(self.sources) else 0
        failed = int((self.sources["status"] == "error").sum()) if len(self.sources) else 0
        skipped = int((self.errors["stage"] == "input").sum()) if len(self.errors) else 0
        return {
            # Every file named like media is one of: annotated (ok or partial), failed, or skipped unread.
            "files_found": len(self.sources) + skipped,
            "files_annotated": len(self.sources) - failed,
            "files_failed": failed,
            "files_skipped": skipped,
            "sources": len(self.sources),
            "sources_ok": int((self.sources["status"] == "ok").sum()) if len(self.sources) else 0,
            "frames_read": int(self.sources["frames_read"].sum()) if len(self.sources) else 0,
            "frames_annotated": frames,
            "faces": int(self.sources["faces"].sum()) if len(self.sources) else 0,
            "tracks": len(self.tracks),
            "errors": len(self.errors),
            "seconds": self.elapsed_s,
            "frames_per_second": (frames if self.frames_this_run is None else self.frames_this_run) / self.elapsed_s
            if self.elapsed_s > 0 else 0.0,
        }


class RunStatistics:
    """Counts faces, frames, tracks and errors per source as the pipeline's events pass."""

    def __init__(self, class_names: tuple[str, ...], input_errors: list[ErrorRecord] | None = None) -> None:
        self.class_names = class_names
        self.input_errors = list(input_errors or [])
        self._sources: dict[int, _SourceTally] = {}

    def source_started(self, number: int, source: MediaSource) -> None:
        self._sources[number] = _SourceTally(source, len(self.class_names))

    def frames_annotated(self, number: int, frames: int, faces: Faces) -> None:
        tally = self._sources[number]
        tally.frames_annotated += frames
        if len(faces) == 0:
            return
        best = faces.probabilities.argmax(axis=1)
        tally.faces += len(faces)
        tally.emotion_counts += np.bincount(best, minlength=len(self.class_names))
        tally.frames_with_faces.update(np.unique(faces.frame_index).tolist())
        track_ids, first_rows, inverse = np.unique(faces.track_id, return_index=True, return_inverse=True)
        for position in np.argsort(first_rows, kind="stable"):  # tracks in order of first appearance
            rows = np.flatnonzero(inverse == position)
            track_id = int(track_ids[position])
            track = tally.tracks.get(track_id)
            if track is None:
                first = rows[0]
                track = _TrackTally(track_id, int(faces.frame_index[first]), float(faces.timestamp_s[first]))
                track.probability_sum = np.zeros(len(self.class_names))
                track.emotion_counts = np.zeros(len(self.class_names), np.int64)
                tally.tracks[track_id] = track
            last = rows[-1]
            track.last_frame, track.last_timestamp_s = int(faces.frame_index[last]), float(faces.timestamp_s[last])
            track.length += len(rows)
            track.probability_sum += faces.probabilities[rows].sum(axis=0, dtype=np.float64)
            track.emotion_counts += np.bincount(best[rows], minlength=len(self.class_names))

    def source_finished(self, number: int, frames_read: int, errors: list[ErrorRecord]) -> None:
        tally = self._sources[number]
        tally.frames_read = frames_read
        tally.errors = list(errors)

    def _tally_rows(self, tally: _SourceTally) -> tuple[dict, list[dict], list[ErrorRecord]]:
        """One source's summary row, its track rows and its errors (a 'no face' note included)."""
        names = self.class_names
        counts = tally.emotion_counts
        notes = []
        if tally.faces == 0 and not tally.errors:
            scope = "image" if tally.source.media_type == "image" else f"{tally.frames_annotated} annotated frames"
            notes.append(ErrorRecord(tally.source.relative, "detect", f"no face detected in {scope}"))
        shares = counts / counts.sum() if counts.sum() else np.zeros(len(names))
        source_row = {
            "source": tally.source.relative,
            "media_type": tally.source.media_type,
            "status": tally.status,
            "frames_read": tally.frames_read,
            "frames_annotated": tally.frames_annotated,
            "frames_with_faces": len(tally.frames_with_faces),
            "faces": tally.faces,
            "tracks": len(tally.tracks),
            "errors": len(tally.errors) + len(notes),
            "dominant_emotion": names[int(np.argmax(counts))] if counts.sum() else None,
            **{f"share_{name}": np.float32(share) for name, share in zip(names, shares)},
        }
        track_rows = []
        for track in tally.tracks.values():
            means = track.probability_sum / max(1, track.length)
            track_rows.append(
                {
                    "source": tally.source.relative,
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
        return source_row, track_rows, tally.errors + notes

    def _summary_of(self, tallies: list[_SourceTally], errors: list[ErrorRecord], elapsed_s: float) -> RunSummary:
        names = self.class_names
        source_rows, track_rows, errors = [], [], list(errors)
        for tally in tallies:
            source_row, tracks, source_errors = self._tally_rows(tally)
            source_rows.append(source_row)
            track_rows += tracks
            errors += source_errors
        return RunSummary(
            names,
            pd.DataFrame(source_rows, columns=source_summary_schema(names).names),
            pd.DataFrame(track_rows, columns=track_summary_schema(names).names),
            pd.DataFrame([vars(error) for error in errors], columns=ERROR_SCHEMA.names),
            elapsed_s,
        )

    def summary(self, elapsed_s: float) -> RunSummary:
        return self._summary_of(list(self._sources.values()), self.input_errors, elapsed_s)

    def source_summary(self, number: int) -> RunSummary:
        """The summary, tracks and errors rows of one finished source (for outputs written per source)."""
        return self._summary_of([self._sources[number]], [], 0.0)
