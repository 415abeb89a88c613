"""Rich progress bars for `fer annotate`: one over files, one over the current file's frames."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fer_batch.media import MediaSource


class RichProgress:
    """A ProgressListener (see fer_batch.pipeline) drawing to a rich console."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self._files = None
        self._frames = None

    def __enter__(self) -> "RichProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._progress.__exit__(*exc_info)

    def source_started(self, source: MediaSource, number: int, total: int, expected_frames: int | None) -> None:
        if self._files is None:
            self._files = self._progress.add_task("files", total=total, rate="")
        name = source.relative if len(source.relative) <= 40 else "..." + source.relative[-37:]
        if self._frames is None:
            self._frames = self._progress.add_task(name, total=expected_frames, rate="")
        else:
            self._progress.reset(self._frames, total=expected_frames, description=name, rate="")

    def frames_done(self, count: int) -> None:
        if self._frames is not None:
            self._progress.advance(self._frames, count)
            task = self._progress.tasks[self._frames]
            if task.speed:
                self._progress.update(self._frames, rate=f"{task.speed:.1f} frames/s")

    def source_finished(self, source: MediaSource) -> None:
        if self._files is not None:
            self._progress.advance(self._files, 1)
