"""`fer serve`: a local web application to try fer-batch on your own photos and videos.

FastAPI + uvicorn serve one plain HTML/JS page and a small JSON API. Why these: FastAPI
parses multipart uploads and validates paths with little code and is well kept; uvicorn
is its standard server; the page needs no build step. Uploads become jobs in a queue that
one worker thread runs in order with one `Annotator` (the models load once); each job
writes the same files as `fer annotate --out results.parquet --report --render` into its
own folder under the work directory, and the page polls the job for progress.

Safety, since a server takes files from a browser: it binds to 127.0.0.1 unless told
otherwise; a request body is capped (`max_upload_mb`, checked as it streams); only image
and video suffixes the pipeline reads are taken, under sanitised names; at most
`max_waiting` jobs wait; and files are served only from inside a job's folder, resolved
and checked, so `..`, absolute paths and symlinks out of it give 404.
"""


# No `from __future__ import annotations`: FastAPI reads the route functions' annotations at runtime,
# and they name classes imported inside create_app.
import queue
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from fer_batch import defaults
from fer_batch.media import MediaSource
from fer_batch.writers import write_csv

JOB_ID = re.compile(r"^[0-9a-f]{12}$")
ACCEPTED_SUFFIXES = frozenset(defaults.IMAGE_SUFFIXES + defaults.VIDEO_SUFFIXES)
RESULTS_NAME = "results.parquet"
TABLE_COLUMNS = ("source", "frame_index", "timestamp_s", "track_id", "emotion", "confidence", "x1", "y1", "x2", "y2")


class UploadRejected(ValueError):
    """An upload the server refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def safe_upload_name(name: str | None) -> str:
    """A file name that stays inside the job's input folder: no directories, no leading dots."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" .")
    return base[:120] or "upload"


@dataclass
class Job:
    id: str
    folder: Path
    files: list[str]
    state: str = "queued"  # queued, running, rendering, done, failed
    created: float = field(default_factory=time.time)
    finished: float | None = None
    sources_total: int = 0
    sources_done: int = 0
    current: str | None = None
    frames_done: int = 0
    frames_expected: int | None = None
    error: str | None = None
    result: dict[str, Any] | None = None

    @property
    def input_dir(self) -> Path:
        return self.folder / "input"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "state": self.state, "files": self.files, "created": self.created, "finished": self.finished,
            "progress": {"sources_total": self.sources_total, "sources_done": self.sources_done, "current": self.current,
                         "frames_done": self.frames_done, "frames_expected": self.frames_expected},
            "error": self.error, "result": self.result,
        }


class _JobProgress:
    """A ProgressListener (fer_batch.pipeline) that keeps a job's counters for the page to poll."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def source_started(self, source: MediaSource, number: int, total: int, expected_frames: int | None) -> None:
        self.job.sources_total, self.job.current = total, source.relative
        self.job.frames_done, self.job.frames_expected = 0, expected_frames

    def frames_done(self, count: int) -> None:
        self.job.frames_done += count

    def source_finished(self, source: MediaSource) -> None:
        self.job.sources_done += 1


class JobQueue:
    """Jobs run one at a time, in the order they came, on one worker thread."""

    def __init__(self, work_dir: Path, make_annotator: Callable[[], Any], max_waiting: int, table_rows: int) -> None:
        self.work_dir = Path(work_dir).resolve()
        (self.work_dir / "jobs").mkdir(parents=True, exist_ok=True)
        self._make_annotator = make_annotator
        self._annotator: Any = None
        self.max_waiting = max_waiting
        self.table_rows = table_rows
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="fer-serve-worker", daemon=True)

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._queue.put(None)

    def waiting(self) -> int:
        return sum(job.state in {"queued", "running", "rendering"} for job in self.jobs.values())

    def new_job(self) -> Job:
        with self._lock:
            if self.waiting() >= self.max_waiting:
                raise UploadRejected(503, f"{self.max_waiting} jobs are already waiting; try again when some finish")
            job_id = uuid.uuid4().hex[:12]
            job = Job(job_id, self.work_dir / "jobs" / job_id, [])
            job.input_dir.mkdir(parents=True)
            return job

    def submit(self, job: Job) -> None:
        with self._lock:
            self.jobs[job.id] = job
        self._queue.put(job.id)

    def discard(self, job: Job) -> None:
        shutil.rmtree(job.folder, ignore_errors=True)

    def job_file(self, job_id: str, relative: str) -> Path | None:
        """The file `relative` inside job `job_id`'s folder, or None if it is outside it or absent."""
        if not JOB_ID.match(job_id) or job_id not in self.jobs:
            return None
        root = (self.work_dir / "jobs" / job_id).resolve()
        try:
            target = (root / relative).resolve()
        except (OSError, ValueError):
            return None
        if not target.is_relative_to(root) or not target.is_file():
            return None
        return target

    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None:
            job = self.jobs[job_id]
            try:
                self._run(job)
                job.state = "done"
            except Exception as error:  # noqa: BLE001 - one failed job must not stop the server
                job.state, job.error = "failed", f"{type(error).__name__}: {error}"
            job.finished = time.time()

    def _run(self, job: Job) -> None:
        from fer_batch.api import annotate_to_file, write_report

        job.state = "running"
        if self._annotator is None:
            self._annotator = self._make_annotator()
        results = job.folder / RESULTS_NAME
        outcome = annotate_to_file([job.input_dir], results, annotator=self._annotator, progress=_JobProgress(job))
        job.current, job.state = None, "rendering"
        outputs = write_report(results, report=job.folder / "report.html", render=job.folder / "annotated")
        faces = pd.read_parquet(results)
        write_csv(faces, job.folder / "results.csv")
        totals = outcome.summary.totals
        link = lambda path: f"/jobs/{job.id}/files/{path.relative_to(job.folder).as_posix()}"  # noqa: E731
        shown = faces[list(TABLE_COLUMNS)].head(self.table_rows)
        shown = shown.astype({name: "float64" for name in shown.select_dtypes("float").columns}).round(3)
        job.result = {
            "faces": int(len(faces)),
            "tracks": int(totals.get("tracks", 0)),
            "sources_ok": int(totals.get("sources_ok", 0)),
            "errors": outcome.summary.errors.astype(str).to_dict(orient="records"),
            "rows": shown.astype(object).where(shown.notna(), None).to_dict(orient="records"),
            "rows_shown": int(len(shown)),
            "report": link(job.folder / "report.html"),
            "parquet": link(results),
            "csv": link(job.folder / "results.csv"),
            "annotated": [link(path) for path in outputs.rendered],
        }


class UploadSizeLimit:
    """ASGI middleware: answer 413 once a request body passes `max_bytes`, counted as it streams
    (Content-Length alone can be absent or wrong), before the multipart parser spools it to disk.

    Past the cap the application is told the client went away, and whatever it answers to that
    is dropped: the 413 has gone out already.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT"}:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = refused = False

        async def counting_receive() -> dict:
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                if not started and not refused:
                    await self._refuse(send)
                refused = True
                return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, tracking_send)

    async def _refuse(self, send: Callable) -> None:
        mb = self.max_bytes / 1e6
        body = f'{{"detail": "the upload is larger than the server\'s limit of {mb:g} MB"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(
    work_dir: Path | str = defaults.SERVE_WORK_DIR,
    make_annotator: Callable[[], Any] | None = None,
    max_upload_mb: float = defaults.SERVE_MAX_UPLOAD_MB,
    max_waiting: int = defaults.SERVE_MAX_WAITING,
    table_rows: int = defaults.SERVE_TABLE_ROWS,
) -> Any:
    """The FastAPI application; `make_annotator` builds the Annotator on the first job."""
    try:
        from fastapi import FastAPI, File, HTTPException, UploadFile
        from fastapi.responses import FileResponse, HTMLResponse
    except ImportError as error:  # the [serve] extra is not installed
        raise ImportError("fer serve needs FastAPI and uvicorn: pip install 'fer-batch[serve]'") from error
    from contextlib import asynccontextmanager

    if make_annotator is None:
        from fer_batch.pipeline import Annotator

        make_annotator = Annotator
    jobs = JobQueue(Path(work_dir), make_annotator, max_waiting, table_rows)
    page = resources.files("fer_batch").joinpath("web/index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: Any):
        jobs.start()
        yield
        jobs.stop()

    app = FastAPI(title="fer-batch", lifespan=lifespan)
    app.state.jobs = jobs
    if max_upload_mb:
        app.add_middleware(UploadSizeLimit, max_bytes=int(max_upload_mb * 1e6))

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        accept = ",".join(sorted(ACCEPTED_SUFFIXES))
        return page.replace("{{accept}}", accept).replace("{{max_upload_mb}}", f"{max_upload_mb:g}")

    @app.post("/api/jobs", status_code=201)
    def create_job(files: list[UploadFile] = File(...)) -> dict:
        try:
            job = jobs.new_job()
        except UploadRejected as error:
            raise HTTPException(error.status, str(error))
        try:
            for upload in files:
                name = safe_upload_name(upload.filename)
                if Path(name).suffix.lower() not in ACCEPTED_SUFFIXES:
                    raise UploadRejected(415, f"{upload.filename!r} is not an image or video this tool reads "
                                              f"({', '.join(sorted(ACCEPTED_SUFFIXES))})")
                target = job.input_dir / name
                stem, number = target.stem, 1
                taken = {file.lower() for file in job.files}  # case-insensitive file systems too
                while target.name.lower() in taken:
                    target, number = job.input_dir / f"{stem}-{number}{target.suffix}", number + 1
                with target.open("wb") as handle:
                    shutil.copyfileobj(upload.file, handle, 1 << 20)
                job.files.append(target.name)
            if not job.files:
                raise UploadRejected(400, "no files in the upload")
        except UploadRejected as error:
            jobs.discard(job)
            raise HTTPException(error.status, str(error))
        jobs.submit(job)
        return job.to_json()

    @app.get("/api/jobs")
    def list_jobs() -> list[dict]:
        return [job.to_json() for job in sorted(jobs.jobs.values(), key=lambda job: job.created, reverse=True)]

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: str) -> dict:
        job = jobs.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job.to_json()

    @app.get("/jobs/{job_id}/files/{relative:path}")
    def job_file(job_id: str, relative: str) -> FileResponse:
        path = jobs.job_file(job_id, relative)
        if path is None:
            raise HTTPException(404, "no such file")
        download = path.suffix in {".parquet", ".csv"}
        return FileResponse(path, filename=path.name if download else None)

    return app


def serve(host: str, port: int, **app_options: Any) -> None:
    """Run the application with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(**app_options), host=host, port=port, log_level="warning")
