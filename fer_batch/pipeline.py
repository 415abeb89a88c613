"""The annotate pipeline: sources -> frames -> detection -> tracking -> crops -> CNN-GRU.

`Annotator` loads the detector and the model once; `Annotator.run(paths)` returns an
`AnnotationRun`, an iterator of `FaceAnnotation` rows that also collects per-source
and per-track statistics and the errors table as it goes, so a run of any size
streams in constant memory. A file that fails becomes an `ErrorRecord` and the run
continues with the next file.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from fer_batch import __version__, defaults
from fer_batch.classifier import CropRequest, SequenceClassifier
from fer_batch.detection import Detection, DetectorConfig, FaceDetector
from fer_batch.media import (
    Frame,
    MediaError,
    MediaSource,
    SamplingConfig,
    VideoReadReport,
    background_frames,
    discover_sources,
    iter_video_frames,
    read_image,
)
from fer_batch.model import Checkpoint, load_checkpoint
from fer_batch.preprocess import Preprocessing, align_face, to_grayscale
from fer_batch.runtime import resolve_device
from fer_batch.tracking import IoUTracker, TrackedFace, TrackerConfig


@dataclass(frozen=True)
class AnnotateOptions:
    """Every option of a run; written into the output's metadata."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    detect_every: int = defaults.DETECT_EVERY
    batch_size: int = defaults.BATCH_SIZE
    detection_batch: int = defaults.DETECTION_BATCH
    device: str = "auto"
    weights: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError(f"detect-every must be at least 1, got {self.detect_every}")
        if self.batch_size < 1 or self.detection_batch < 1:
            raise ValueError("batch sizes must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FaceAnnotation:
    """One face on one annotated frame."""

    source: str
    media_type: str
    frame_index: int
    timestamp_s: float
    track_id: int
    box: tuple[float, float, float, float]
    det_score: float
    detected: bool
    frame_width: int
    frame_height: int
    landmarks: np.ndarray  # (5, 2)
    probabilities: np.ndarray  # (C,) float32, sums to 1
    emotion: str
    confidence: float


@dataclass(frozen=True)
class ErrorRecord:
    source: str
    stage: str
    message: str


@dataclass
class TrackStats:
    source: str
    track_id: int
    first_frame: int
    last_frame: int
    first_timestamp_s: float
    last_timestamp_s: float
    length: int
    probability_sum: np.ndarray
    emotion_counts: np.ndarray


@dataclass
class SourceStats:
    source: str
    media_type: str
    status: str = "pending"  # ok, partial (errors after some frames), error
    frames_read: int = 0
    frames_annotated: int = 0
    frames_with_faces: int = 0
    faces: int = 0
    errors: int = 0
    emotion_counts: np.ndarray | None = None
    track_ids: set[int] = field(default_factory=set)
    _frames_with_faces: set[int] = field(default_factory=set, repr=False)


class ProgressListener(Protocol):
    def source_started(self, source: MediaSource, number: int, total: int, expected_frames: int | None) -> None: ...
    def frames_done(self, count: int) -> None: ...
    def source_finished(self, source: MediaSource) -> None: ...


class _SilentProgress:
    def source_started(self, source: MediaSource, number: int, total: int, expected_frames: int | None) -> None:
        pass

    def frames_done(self, count: int) -> None:
        pass

    def source_finished(self, source: MediaSource) -> None:
        pass


@dataclass
class _PendingFace:
    """A face cut out of its frame, waiting for a classifier batch."""

    source_number: int
    source: MediaSource
    frame_index: int
    timestamp_s: float
    frame_shape: tuple[int, int]
    face: TrackedFace
    crop: np.ndarray


def landmarks_from_box(box: tuple[float, float, float, float], preprocessing: Preprocessing) -> np.ndarray:
    """Template landmarks placed in a box: a fallback when detected landmarks are unusable."""
    x1, y1, x2, y2 = box
    template = np.asarray(preprocessing.landmarks, dtype=np.float32) / preprocessing.crop_size
    return np.stack([x1 + template[:, 0] * (x2 - x1), y1 + template[:, 1] * (y2 - y1)], axis=1)


class Annotator:
    """Holds the loaded detector and model; reuse it for many runs."""

    def __init__(self, options: AnnotateOptions = AnnotateOptions(), checkpoint: Checkpoint | None = None) -> None:
        self.options = options
        self.device = resolve_device(options.device)
        weights = Path(options.weights) if options.weights else defaults.default_weights_path()
        self.checkpoint = checkpoint or load_checkpoint(weights)
        self.detector = FaceDetector(options.detector, self.device)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.checkpoint.class_names

    def with_options(self, **changes) -> "Annotator":
        """A copy with other run options that reuses the loaded model (and detector, if unchanged)."""
        options = replace(self.options, **changes)
        if options.device != self.options.device or options.weights != self.options.weights:
            raise ValueError("with_options cannot change device or weights; build a new Annotator")
        clone = Annotator.__new__(Annotator)
        clone.options, clone.device, clone.checkpoint = options, self.device, self.checkpoint
        same_detector = options.detector == self.options.detector
        clone.detector = self.detector if same_detector else FaceDetector(options.detector, self.device)
        return clone

    def metadata(self, run: "AnnotationRun | None" = None) -> dict[str, str]:
        """What a reader of the output needs to know how it was made (and where its media are)."""
        import json

        sources = {source.relative: str(source.path.resolve()) for source in run.sources} if run else {}
        return {
            "fer_batch.source_paths": json.dumps(sources),
            "fer_batch.version": __version__,
            "fer_batch.weights": self.checkpoint.name,
            "fer_batch.weights_sha256": self.checkpoint.sha256 or "",
            "fer_batch.class_names": json.dumps(list(self.class_names)),
            "fer_batch.options": json.dumps(self.options.to_dict(), default=str),
            "fer_batch.device": str(self.device),
        }

    def run(self, paths: list[Path | str], progress: ProgressListener | None = None) -> "AnnotationRun":
        sources, unsupported = discover_sources(paths, self.options.include, self.options.exclude)
        return AnnotationRun(self, sources, unsupported, progress or _SilentProgress())


class AnnotationRun:
    """Iterate to get `FaceAnnotation` rows; statistics and errors fill in as it goes."""

    def __init__(
        self,
        annotator: Annotator,
        sources: list[MediaSource],
        unsupported: list[tuple[str, str]],
        progress: ProgressListener,
    ) -> None:
        self.annotator = annotator
        self.options = annotator.options
        self.sources = sources
        self.progress = progress
        self.class_names = annotator.class_names
        self.errors: list[ErrorRecord] = [ErrorRecord(name, "input", message) for name, message in unsupported]
        self.source_stats: list[SourceStats] = []
        self.track_stats: dict[tuple[int, int], TrackStats] = {}
        self.started_at = time.time()
        self.finished_at: float | None = None
        self._classifier = SequenceClassifier(annotator.checkpoint, annotator.device)
        self._pending: list[_PendingFace] = []
        self._finished_sources: list[int] = []

    # -- iteration ----------------------------------------------------------------
    def __iter__(self) -> Iterator[FaceAnnotation]:
        for number, source in enumerate(self.sources):
            stats = SourceStats(source.relative, source.media_type, emotion_counts=np.zeros(len(self.class_names), np.int64))
            self.source_stats.append(stats)
            try:
                if source.media_type == "image":
                    self.progress.source_started(source, number, len(self.sources), 1)
                    yield from self._annotate_image(number, source, stats)
                else:
                    yield from self._annotate_video(number, source, stats)
            except MediaError as error:
                self._record_error(stats, error.stage, error.message)
            except Exception as error:  # noqa: BLE001 - one bad file must not end the run
                self._record_error(stats, "annotate", f"{type(error).__name__}: {error}")
            self._finished_sources.append(number)
            if len(self._pending) >= self.options.batch_size:
                yield from self._flush()
            self.progress.source_finished(source)
            if stats.status == "pending":
                stats.status = "ok"
        yield from self._flush()
        for stats in self.source_stats:
            if stats.faces == 0 and stats.status == "ok":
                scope = "image" if stats.media_type == "image" else f"{stats.frames_annotated} annotated frames"
                self._record_error(stats, "detect", f"no face detected in {scope}", status="ok")
        self.finished_at = time.time()

    def _record_error(self, stats: SourceStats, stage: str, message: str, status: str | None = None) -> None:
        self.errors.append(ErrorRecord(stats.source, stage, message))
        stats.errors += 1
        stats.status = status or ("partial" if stats.frames_annotated > 0 else "error")

    def _annotate_image(self, number: int, source: MediaSource, stats: SourceStats) -> Iterator[FaceAnnotation]:
        rgb = read_image(source.path)
        stats.frames_read = 1
        frame = Frame(source, 0, 0.0, rgb)
        detections = self.annotator.detector.detect([rgb])[0]
        # Each face of an image is its own track (a sequence of one).
        faces = [TrackedFace(index + 1, detection, True) for index, detection in enumerate(detections)]
        self._queue(number, source, frame, faces, stats)
        self.progress.frames_done(1)
        if len(self._pending) >= self.options.batch_size:
            yield from self._flush()

    def _annotate_video(self, number: int, source: MediaSource, stats: SourceStats) -> Iterator[FaceAnnotation]:
        report = VideoReadReport()
        frames = background_frames(iter_video_frames(source, self.options.sampling, report))
        tracker = IoUTracker(self.options.tracker)
        window: list[tuple[Frame, bool]] = []
        detect_count = 0
        sampled = 0
        started = False
        try:
            for frame in frames:
                if not started:
                    info = report.info
                    expected = info.frame_count if info and info.frame_count > 0 else None
                    if expected and self.options.sampling.every_nth > 1:
                        expected = -(-expected // self.options.sampling.every_nth)
                    if expected and self.options.sampling.max_frames:
                        expected = min(expected, self.options.sampling.max_frames)
                    self.progress.source_started(source, number, len(self.sources), expected)
                    started = True
                run_detector = sampled % self.options.detect_every == 0
                sampled += 1
                window.append((frame, run_detector))
                detect_count += run_detector
                if detect_count >= self.options.detection_batch:
                    yield from self._process_window(number, source, window, tracker, stats)
                    window, detect_count = [], 0
                stats.frames_read = report.frames_read
        except MediaError:
            stats.frames_read = report.frames_read
            if window:  # frames decoded before a decode error are still annotated
                yield from self._process_window(number, source, window, tracker, stats)
            raise
        stats.frames_read = report.frames_read
        if window:
            yield from self._process_window(number, source, window, tracker, stats)
        if not started:
            self.progress.source_started(source, number, len(self.sources), 0)
        if report.truncated_message:
            self._record_error(stats, "decode", report.truncated_message)

    def _process_window(
        self,
        number: int,
        source: MediaSource,
        window: list[tuple[Frame, bool]],
        tracker: IoUTracker,
        stats: SourceStats,
    ) -> Iterator[FaceAnnotation]:
        to_detect = [frame.rgb for frame, run_detector in window if run_detector]
        detections = iter(self.annotator.detector.detect(to_detect))
        for frame, run_detector in window:
            if run_detector:
                faces = tracker.update(frame.index, next(detections))
            else:
                faces = tracker.carry_forward(frame.index)
            faces.sort(key=lambda face: face.track_id)
            self._queue(number, source, frame, faces, stats)
        self.progress.frames_done(len(window))
        if len(self._pending) >= self.options.batch_size:
            yield from self._flush()

    def _queue(self, number: int, source: MediaSource, frame: Frame, faces: list[TrackedFace], stats: SourceStats) -> None:
        stats.frames_annotated += 1
        if not faces:
            return
        gray = to_grayscale(frame.rgb)
        for face in faces:
            self._pending.append(
                _PendingFace(
                    number, source, frame.index, frame.timestamp_s, gray.shape[:2], face, self._crop(gray, face.detection)
                )
            )

    def _crop(self, gray: np.ndarray, detection: Detection) -> np.ndarray:
        preprocessing = self.annotator.checkpoint.preprocessing
        try:
            return align_face(gray, detection.landmarks, preprocessing)
        except ValueError:
            return align_face(gray, landmarks_from_box(detection.box, preprocessing), preprocessing)

    def _flush(self) -> Iterator[FaceAnnotation]:
        pending, self._pending = self._pending, []
        class_names = self.class_names
        for start in range(0, len(pending), self.options.batch_size):
            chunk = pending[start : start + self.options.batch_size]
            requests = [
                CropRequest((item.source_number, item.face.track_id), (item.source_number, item.frame_index), item.crop)
                for item in chunk
            ]
            probabilities = self._classifier.classify(requests)
            for item, probs in zip(chunk, probabilities):
                yield self._annotation(item, probs, class_names)
        for number in self._finished_sources:
            self._classifier.forget_source(number)
        self._finished_sources = []

    def _annotation(self, item: _PendingFace, probabilities: np.ndarray, class_names: tuple[str, ...]) -> FaceAnnotation:
        best = int(np.argmax(probabilities))
        detection = item.face.detection
        height, width = item.frame_shape
        annotation = FaceAnnotation(
            source=item.source.relative,
            media_type=item.source.media_type,
            frame_index=item.frame_index,
            timestamp_s=item.timestamp_s,
            track_id=item.face.track_id,
            box=detection.box,
            det_score=detection.score,
            detected=item.face.detected,
            frame_width=int(width),
            frame_height=int(height),
            landmarks=detection.landmarks,
            probabilities=probabilities,
            emotion=class_names[best],
            confidence=float(probabilities[best]),
        )
        self._count(item.source_number, annotation, best)
        return annotation

    def _count(self, number: int, annotation: FaceAnnotation, best: int) -> None:
        stats = self.source_stats[number]
        stats.faces += 1
        stats.emotion_counts[best] += 1
        stats.track_ids.add(annotation.track_id)
        if annotation.frame_index not in stats._frames_with_faces:
            stats._frames_with_faces.add(annotation.frame_index)
            stats.frames_with_faces += 1
        key = (number, annotation.track_id)
        track = self.track_stats.get(key)
        if track is None:
            classes = len(self.class_names)
            track = TrackStats(
                annotation.source, annotation.track_id, annotation.frame_index, annotation.frame_index,
                annotation.timestamp_s, annotation.timestamp_s, 0, np.zeros(classes), np.zeros(classes, np.int64),
            )
            self.track_stats[key] = track
        track.last_frame = annotation.frame_index
        track.last_timestamp_s = annotation.timestamp_s
        track.length += 1
        track.probability_sum += annotation.probabilities
        track.emotion_counts[best] += 1

    @property
    def elapsed_s(self) -> float:
        return (self.finished_at or time.time()) - self.started_at
