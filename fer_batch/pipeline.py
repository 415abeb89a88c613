"""The annotate pipeline, as a chain of generators over one stream of events:

    read_frames -> detect_faces -> track_faces -> crop_faces -> classify_faces [-> look_ahead] -> sinks

Each source becomes `SourceStarted`, a few `FrameBatch`es and `SourceFinished`, in
order; each stage transforms the batches it knows and passes every other event on, so
each can be run and tested alone. Faces travel as a columnar `Faces` batch. A stage
that fails on a source records the error on its `SourceRun` and marks it failed: the
other stages drop its remaining batches, the reader stops decoding it, and the run
goes on with the next source. `Annotator` loads the detector and model once;
`Annotator.run(paths, options)` returns an `AnnotationRun` that drives the chain,
feeds the statistics and progress sinks, and yields classified `Faces` batches.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Protocol

import numpy as np
import torch

from fer_batch import __version__, defaults
from fer_batch.classifier import SequenceClassifier, classifiers_by_media_type
from fer_batch.detection import FaceDetector
from fer_batch.faces import Faces
from fer_batch.media import (
    Frame,
    MediaError,
    MediaSource,
    VideoReadReport,
    background_frames,
    discover_sources,
    iter_video_frames,
    read_image,
)
from fer_batch.model import Checkpoint, load_media_checkpoints
from fer_batch.options import ModelOptions, RunOptions, options_document
from fer_batch.preprocess import Preprocessing, align_face, to_grayscale
from fer_batch.results import RunMetadata
from fer_batch.runtime import configure_threads, detection_workers, downstream_threads, resolve_device
from fer_batch.statistics import ErrorRecord, RunStatistics, RunSummary
from fer_batch.temporal import backward_for, look_ahead_end, smooth
from fer_batch.tracking import IoUTracker, box_iou, box_sizes, greedy_pairs


# -- events ---------------------------------------------------------------------------
@dataclass
class SourceRun:
    """One source's state during a run, shared by the stages."""

    number: int  # position in the run
    source: MediaSource
    expected_frames: int | None = None
    frames_read: int = 0
    errors: list[ErrorRecord] = field(default_factory=list)
    failed: bool = False  # a stage gave up on this source
    reached_end: bool = False  # a video read to its last frame (not cut by --max-frames or a Ray segment)

    def record_error(self, stage: str, message: str) -> None:
        self.errors.append(ErrorRecord(self.source.relative, stage, message))

    def fail(self, stage: str, error: Exception) -> None:
        """A stage could not go on with this source: record why; its remaining batches are dropped."""
        self.record_error(stage, f"{type(error).__name__}: {error}")
        self.failed = True


@dataclass
class SourceStarted:
    run: SourceRun


@dataclass
class FrameBatch:
    """Consecutive annotated frames of one source and their faces. Stages pass on new batches rather
    than change the ones they receive; the crop stage passes them on without their frames."""

    run: SourceRun
    frames: list[Frame]
    frame_count: int
    detect: list[bool] = field(default_factory=list)  # per frame: does the detector see it
    small_faces: list[bool] = field(default_factory=list)  # per frame: does the detector search it down to min_face_size
    faces: Faces | None = None
    # A video's keyframe faces that the detector scored from CANDIDATE_THRESHOLD up to `threshold`:
    # the track stage confirms them by refinement or drops them, and passes batches on without them
    candidates: Faces | None = None


@dataclass
class SourceFinished:
    run: SourceRun


Event = SourceStarted | FrameBatch | SourceFinished


# -- stages ---------------------------------------------------------------------------
def read_frames(
    sources: list[MediaSource], options: RunOptions, frame_range: tuple[int, int | None] | None = None
) -> Iterator[Event]:
    """Decode each source into one-frame batches; unreadable files become errors.

    `frame_range` (start, stop) reads only those frames of the videos: a segment (fer_batch.ray).
    """
    for number, source in enumerate(sources):
        run = SourceRun(number, source)
        if source.media_type == "image":
            run.expected_frames = 1
            yield SourceStarted(run)
            try:
                frame = Frame(source, 0, 0.0, read_image(source.path))
                run.frames_read = 1
                yield FrameBatch(run, [frame], 1)
            except MediaError as error:
                run.record_error(error.stage, error.message)
            except Exception as error:  # noqa: BLE001 - one bad file must not end the run
                run.fail("read", error)
        else:
            yield from _video_events(run, options, *(frame_range or (0, None)))
        yield SourceFinished(run)


def _video_events(run: SourceRun, options: RunOptions, start_frame: int = 0, stop_frame: int | None = None) -> Iterator[Event]:
    report = VideoReadReport()
    started = False
    try:
        frames_of = iter_video_frames(run.source, options, report, start_frame, stop_frame)
        with contextlib.closing(background_frames(frames_of)) as frames:
            for frame in frames:
                if not started:
                    run.expected_frames = _expected_frames(report, options)
                    yield SourceStarted(run)
                    started = True
                run.frames_read = report.frames_read
                yield FrameBatch(run, [frame], 1)
                if run.failed:
                    break
    except MediaError as error:  # frames decoded before the error are still annotated
        run.record_error(error.stage, error.message)
    except Exception as error:  # noqa: BLE001 - one bad file must not end the run
        run.fail("decode", error)
    run.frames_read = report.frames_read
    run.reached_end = report.reached_end
    if not started:
        run.expected_frames = 0
        yield SourceStarted(run)
    if report.truncated_message:
        run.record_error("decode", report.truncated_message)


def _expected_frames(report: VideoReadReport, options: RunOptions) -> int | None:
    """Annotated frames to expect, for progress bars (the container's count may be missing)."""
    info = report.info
    expected = info.frame_count if info and info.frame_count > 0 else None
    if expected and options.fps is None and options.every_nth > 1:
        expected = -(-expected // options.every_nth)
    if expected and options.max_frames:
        expected = min(expected, options.max_frames)
    return expected


def _guarded(batch: FrameBatch, stage: str, work) -> FrameBatch | None:
    """Run one stage's work on a batch; a failure marks its source failed and drops the batch."""
    if batch.run.failed:
        return None
    try:
        return work(batch)
    except Exception as error:  # noqa: BLE001 - one bad file must not end the run
        batch.run.fail(stage, error)
        return None


def detect_faces(
    events: Iterable[Event], detector: FaceDetector, options: RunOptions, workers: int = 1,
    threads_per_worker: int = 1, threads: int | None = None,
) -> Iterator[Event]:
    """Group frames into windows of `detect_batch` detector frames (every `detect_every`-th frame,
    and a video's last frame) and detect: faces from `min_face_size` up on every
    `small_face_period`-th detector frame and the last, from `small_face_size` up on the others.

    With `workers` > 1, up to that many windows are detected at once, each in a thread of its own
    with `threads_per_worker` torch threads (fer_batch.runtime.detection_workers), while the
    stages downstream work on the windows before; events still leave in order. Those stages run
    in this thread when it takes the next event, so before handing one on, this thread's torch
    threads are set to the run's `threads` (default: this thread's count) less those of the
    windows still being detected, at least one (fer_batch.runtime.downstream_threads): on two
    cores, a second thread there only takes a core from a detector. The count is restored when
    the events end."""
    options = options.for_device(detector.device)
    window: list[FrameBatch] = []
    window_detections = 0  # frames in the window the detector will see
    sampled = 0
    outbox: deque[Event | Future | None] = deque()  # in order: events, detections under way
    executor = (
        ThreadPoolExecutor(workers, thread_name_prefix="fer-detect", initializer=torch.set_num_threads,
                           initargs=(threads_per_worker,))
        if workers > 1 else None
    )

    def detect(batch: FrameBatch) -> FrameBatch:
        """The batch with its detections; a video's also with its candidates (`FrameBatch.candidates`)."""
        source = batch.run.source
        video = source.media_type == "video"
        lowest = min(options.threshold, defaults.CANDIDATE_THRESHOLD) if video else options.threshold
        parts = []
        for small_faces, min_face_size in ((True, options.min_face_size), (False, options.small_face_size)):
            chosen = [frame for frame, flag, small in zip(batch.frames, batch.detect, batch.small_faces)
                      if flag and small == small_faces]
            if chosen:
                parts.append(detector.detect(
                    chosen, source.relative, source.media_type, threshold=lowest,
                    min_face_size=min_face_size, detect_scale=options.detect_scale,
                    proposal_threshold=options.proposal_threshold,
                ))
        if not parts:
            return replace(batch, faces=Faces.empty(source.relative, source.media_type))
        faces = Faces.concat(parts)
        faces = faces.select(np.argsort(faces.frame_index, kind="stable"))
        if not video:
            return replace(batch, faces=faces)
        strong = faces.det_score >= options.threshold
        return replace(batch, faces=faces.select(strong), candidates=faces.select(~strong))

    def flush() -> None:
        """Send the window to the detector: at once, or to a worker."""
        nonlocal window, window_detections
        if window:
            merged = FrameBatch(
                window[0].run, [frame for batch in window for frame in batch.frames],
                sum(batch.frame_count for batch in window), [flag for batch in window for flag in batch.detect],
                small_faces=[flag for batch in window for flag in batch.small_faces],
            )
            window, window_detections = [], 0
            if executor is None:
                outbox.append(_guarded(merged, "detect", detect))
            else:
                outbox.append(executor.submit(_guarded, merged, "detect", detect))

    own_threads = torch.get_num_threads()
    threads = threads or own_threads

    def ready(in_flight: int) -> Iterator[Event]:
        """The outbox's head as far as it is done; waits on it while more than `in_flight`
        windows are being detected."""
        while outbox:
            head = outbox[0]
            if isinstance(head, Future):
                if not head.done() and sum(isinstance(item, Future) for item in outbox) <= in_flight:
                    return
                head = head.result()  # _guarded: a failure is on the source's record, not raised
            outbox.popleft()
            if head is not None:
                if executor is not None:  # the stages downstream get the cores the detectors leave
                    detecting = sum(isinstance(item, Future) and not item.done() for item in outbox)
                    torch.set_num_threads(downstream_threads(threads, detecting, threads_per_worker))
                yield head

    try:
        for event in events:
            if isinstance(event, FrameBatch):
                if event.run.failed:
                    continue
                numbers = range(sampled, sampled + event.frame_count)
                flags = [number % options.detect_every == 0 for number in numbers]
                small = [flag and (number // options.detect_every) % options.small_face_period == 0
                         for number, flag in zip(numbers, flags)]
                sampled += event.frame_count
                if window_detections >= options.detect_batch:
                    # A full window is detected once the next frame comes: a window's last frame may be
                    # the video's last, which SourceFinished then makes a small-face frame.
                    flush()
                    yield from ready(workers)
                window.append(replace(event, detect=flags, small_faces=small))
                window_detections += sum(flags)
                continue
            if isinstance(event, SourceFinished):
                if event.run.reached_end and window and not window[-1].small_faces[-1]:
                    # The video's last frame is a keyframe too, searched for faces of every size: a face
                    # that walks in after the last regular keyframe is found there, and early track
                    # starts carry it back.
                    last = window[-1]
                    window[-1] = replace(last, detect=[*last.detect[:-1], True], small_faces=[*last.small_faces[:-1], True])
                flush()
            else:
                sampled = 0
            outbox.append(event)
            yield from ready(workers)
        yield from ready(0)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(own_threads)


Refiner = Callable[[Frame, np.ndarray, str, str], Faces]


def track_faces(events: Iterable[Event], options: RunOptions, refine: Refiner,
                trace_back_bytes: int = defaults.TRACE_BACK_BYTES) -> Iterator[Event]:
    """Give every face a track id: per video an IoU tracker; on frames between detector keyframes
    `refine` (MTCNN's last stage) turns each live track's predicted box into a real box, landmarks
    and score, and tracks that score under `defaults.REFINE_THRESHOLD` (or `threshold`, if lower)
    miss; a track that had no face on the previous frame needs `threshold` to come back; a refined
    box larger than `defaults.MAX_REFINED_GROWTH` times the track's last detection is not its face
    (O-Net drifted onto a turned head, hair or a passer-by) and the track misses. On a keyframe the
    tracks the detector missed are refined the same way, so a face whose detector score dips under
    `threshold` for a frame keeps its row. In an image each face is its own track, numbered left to
    right.

    On a keyframe, a live track that no detection overlaps (`track_iou`) and that had its face on
    the frame before is refined first; where its refined box overlaps a detection that no track
    overlaps by `defaults.CLAIM_IOU`, the track claims it: the face moved further than its box's
    width in a frame (a new track has no velocity yet), and O-Net followed it there.

    A face that a keyframe finds and no track follows starts a track there, and the track is
    followed backwards too (a batch tool has the frames before): over the frames before the
    keyframe, newest first, while O-Net scores the face `defaults.TRACE_THRESHOLD` or more (or
    `threshold`, if lower), its box has not grown past that bound, and it is not on a face the
    frame already has. A track the detector finds again after frames without its face is followed
    back the same way over those frames. For that, each video's
    tracked batches are held back (with their frames) until the frames of the batches after them
    pass `trace_back_bytes` (memory bounded, not by the video's length). So a face that walks in
    between two keyframes, or that the detector finds only once it is large enough (a person who
    walks towards the camera), is tracked from where O-Net first sees it.

    A keyframe's candidates (faces the detector scored from `defaults.CANDIDATE_THRESHOLD` up to
    `threshold`) that no track follows are refined as tracked faces are, and those that then score
    `defaults.CANDIDATE_CONFIRM` (or `threshold`, if higher) are new faces like the detections
    (their rows: `detected` False).
    """
    tracker = IoUTracker(options.track_iou, options.max_missed)

    refine_threshold = min(options.threshold, defaults.REFINE_THRESHOLD)
    trace_threshold = min(options.threshold, defaults.TRACE_THRESHOLD)

    def refined_tracks(frame: Frame, source: MediaSource, only_missing: bool, skip: np.ndarray | None = None) -> Faces:
        """Live tracks' predicted boxes on `frame` (with `only_missing`, those of tracks with no face
        there yet) refined by O-Net, under their track ids; those that score the refine threshold
        where the track had a face on the previous annotated frame, `threshold` where it had none.

        A track followed without a break needs less evidence than a new face; one that has lost
        its face is predicted from an older box, and O-Net's middling score there is often a
        turned-away head or a shoulder: to come back, it needs a new face's evidence (a track
        kept alive at 0.5-0.8 on the back of a head had a second track start on the same head)."""
        track_ids, predicted = tracker.predictions(frame.index, only_missing=only_missing)
        if skip is not None:
            wanted = ~np.isin(track_ids, skip)
            track_ids, predicted = track_ids[wanted], predicted[wanted]
        refined = refine(frame, predicted, source.relative, source.media_type).replace(track_id=track_ids)
        unbroken = tracker.unbroken(track_ids, frame.index)
        grown = box_sizes(refined.boxes) > defaults.MAX_REFINED_GROWTH * tracker.detected_sizes(track_ids)
        return refined.select((refined.det_score >= np.where(unbroken, refine_threshold, options.threshold)) & ~grown)

    def refined_faces(frame: Frame, source: MediaSource) -> Faces:
        return tracker.update_tracks(frame.index, refined_tracks(frame, source, only_missing=False))

    def confirmed(frame: Frame, detected: Faces, candidates: Faces, source: MediaSource) -> Faces:
        """The keyframe's candidates (faces the detector scored under `threshold`) that are on no
        detection and no live track's predicted box, refined as a tracked face is; those scoring
        `defaults.CANDIDATE_CONFIRM` (or `threshold`, if higher) are new faces (refined faces,
        `detected` False). The detector's O-Net sees one box per face; refinement's second pass
        and shifts find small faces it scores lower."""
        if not len(candidates):
            return candidates
        taken = np.concatenate([tracker.predictions(frame.index)[1], detected.boxes.astype(np.float64)])
        free = box_iou(candidates.boxes.astype(np.float64), taken).max(axis=1, initial=0.0) < options.track_iou
        refined = refine(frame, candidates.boxes[free].astype(np.float64), source.relative, source.media_type)
        refined = refined.select(refined.det_score >= max(options.threshold, defaults.CANDIDATE_CONFIRM))
        refined = refined.select(np.argsort(-refined.det_score, kind="stable"))
        boxes, kept = refined.boxes.astype(np.float64), []
        for row in range(len(refined)):  # not on a detection, nor on a stronger candidate: one row per face
            others = np.concatenate([detected.boxes.astype(np.float64), boxes[kept]])
            if box_iou(boxes[row : row + 1], others).max(initial=0.0) < options.track_iou:
                kept.append(row)
        return refined.select(np.sort(np.array(kept, np.int64)))

    def keyframe_faces(frame: Frame, detected: Faces, candidates: Faces, source: MediaSource) -> Faces:
        """The keyframe's detections, and its candidates that refinement confirms, on their tracks,
        and the live tracks the detector missed there that refinement still finds (as between
        keyframes): a face the detector scores just under `threshold` on one frame keeps its track
        and its row instead of blinking out."""
        new_faces = confirmed(frame, detected, candidates, source)
        if len(new_faces):
            detected = Faces.concat([detected, new_faces])
        # The live tracks no detection overlaps are refined at their predicted boxes. One that had its
        # face on the previous frame and whose refined box lands on a detection no track overlaps
        # claims it: the face moved further than its box's width since then (a new track has no
        # velocity yet), and O-Net followed it there; it is not a second face starting a track.
        matched = tracker.matched(frame.index, detected)
        refined = refined_tracks(frame, source, only_missing=True, skip=matched[matched > 0])
        claims: dict[int, int] = {}
        free = np.flatnonzero(matched == 0)
        if len(refined) and len(free):
            unbroken = tracker.unbroken(refined.track_id, frame.index)
            overlaps = box_iou(refined.boxes.astype(np.float64), detected.boxes[free].astype(np.float64))
            overlaps[~unbroken] = 0.0
            for row, column in greedy_pairs(overlaps, defaults.CLAIM_IOU):
                claims[int(free[column])] = int(refined.track_id[row])
        faces = tracker.update(frame.index, detected, claims)
        refined = refined.select(np.isin(refined.track_id, tracker.live_ids()) & ~np.isin(refined.track_id, list(claims.values())))
        keep = np.ones(len(refined), bool)
        if len(faces) and len(refined):  # not on a face the detector found: the track drifted onto another
            # person, whose track it would take over on the next keyframe (overlapping as a track match does)
            keep = box_iou(refined.boxes.astype(np.float64), faces.boxes.astype(np.float64)).max(axis=1) < options.track_iou
        recovered = tracker.recover(frame.index, refined.select(keep))
        if not len(recovered):
            return faces
        both = Faces.concat([faces, recovered])
        return both.select(np.argsort(both.track_id, kind="stable"))

    held: deque[tuple[FrameBatch, list[Faces]]] = deque()  # tracked video batches not yet passed on, and their faces by frame
    held_bytes = 0

    def traced_back(new: Faces, earlier: list[tuple[Frame, list[Faces], int]], source: MediaSource,
                    stops: np.ndarray | None = None) -> None:
        """Follow the faces of new tracks (a keyframe's detections that no track followed) backwards
        over `earlier` frames, newest first (each with the list and position of its faces), each
        face down to the frame after its `stops` entry (a track found again: its last face before;
        -1, the default: as far as `earlier` goes), as tracks are followed forwards: O-Net refines
        each face at its box on the frame after, moved back at the face's own velocity, and the
        face is there while it scores `trace_threshold`, is no larger than
        `defaults.MAX_REFINED_GROWTH` times the detection it is followed back from, and is not on
        a face that frame already has. Its rows join that frame's faces under its track's id."""
        boxes, track_ids = new.boxes.astype(np.float64), new.track_id
        largest = defaults.MAX_REFINED_GROWTH * box_sizes(boxes)
        velocity = np.zeros_like(boxes)
        stops = np.full(len(new), -1, np.int64) if stops is None else stops
        for frame, faces_of, position in earlier:
            keep = stops < frame.index
            boxes, track_ids, largest, velocity, stops = boxes[keep], track_ids[keep], largest[keep], velocity[keep], stops[keep]
            if not len(track_ids):
                return
            shift = np.tile((velocity[:, :2] + velocity[:, 2:]) / 2, 2)
            found = refine(frame, boxes - shift, source.relative, source.media_type).replace(track_id=track_ids)
            keep = (found.det_score >= trace_threshold) & (box_sizes(found.boxes) <= largest)
            present = faces_of[position]
            found_boxes = found.boxes.astype(np.float64)
            if len(present):
                keep &= box_iou(found_boxes, present.boxes.astype(np.float64)).max(axis=1) < options.track_iou
            overlaps = np.triu(box_iou(found_boxes, found_boxes), k=1)  # two new tracks on one face: the stronger goes on
            for first, second in zip(*np.nonzero(overlaps >= options.track_iou)):
                if keep[first] and keep[second]:
                    keep[first if found.det_score[first] < found.det_score[second] else second] = False
            velocity = (0.5 * velocity + 0.5 * (boxes - found_boxes))[keep]
            boxes, track_ids, largest, found = found_boxes[keep], track_ids[keep], largest[keep], found.select(keep)
            stops = stops[keep]
            if len(found):
                both = Faces.concat([present, found])
                faces_of[position] = both.select(np.argsort(both.track_id, kind="stable"))

    def track(batch: FrameBatch) -> tuple[FrameBatch, list[Faces]]:
        detections = batch.faces
        candidates = batch.candidates if batch.candidates is not None else Faces.empty(batch.run.source.relative, "video")
        per_frame: list[Faces] = []
        for position, (frame, detected) in enumerate(zip(batch.frames, batch.detect)):
            if detected:
                first_new_id = tracker.next_id
                live_ids = tracker.live_ids()
                last_seen = dict(zip(live_ids.tolist(), tracker.last_frames(live_ids).tolist()))
                faces = keyframe_faces(frame, detections.select(detections.frame_index == frame.index),
                                       candidates.select(candidates.frame_index == frame.index), batch.run.source)
                # New tracks, and tracks the detector finds again after frames without their face,
                # are followed back (the second over those frames only): from the detector's evidence,
                # as far as O-Net still sees the face. A track refinement recovers is not.
                stops = np.array([last_seen.get(int(track_id), -1) for track_id in faces.track_id], np.int64)
                previous_frame = tracker.round_before(frame.index)
                lost = (stops >= 0) & (stops < (previous_frame if previous_frame is not None else -1)) & faces.detected
                back = (faces.track_id >= first_new_id) | lost
                if back.any():  # newest first: this batch's frames before the keyframe, then the held batches'
                    earlier = [(batch.frames[index], per_frame, index) for index in range(position - 1, -1, -1)]
                    earlier += [(held_batch.frames[index], faces_of, index) for held_batch, faces_of in reversed(held)
                                for index in range(len(held_batch.frames) - 1, -1, -1)]
                    traced_back(faces.select(back), earlier, batch.run.source, stops[back])
            else:
                faces = refined_faces(frame, batch.run.source)
            per_frame.append(faces)
        return batch, per_frame

    def passed_on(batch: FrameBatch, per_frame: list[Faces]) -> FrameBatch:
        return replace(batch, faces=Faces.concat(per_frame), candidates=None)

    def release(keep_bytes: int) -> Iterator[FrameBatch]:
        """The held batches, oldest first, until those left hold at most `keep_bytes` of frames."""
        nonlocal held_bytes
        while held and (held_bytes > keep_bytes or held[0][0].run.failed):
            batch, per_frame = held.popleft()
            held_bytes -= sum(frame.rgb.nbytes for frame in batch.frames)
            if not batch.run.failed:
                yield passed_on(batch, per_frame)

    for event in events:
        if isinstance(event, FrameBatch):
            if event.run.failed:
                continue
            if event.run.source.media_type == "image":
                faces = event.faces
                yield replace(event, faces=faces.replace(track_id=np.arange(1, len(faces) + 1, dtype=np.int32)))
                continue
            tracked = _guarded(event, "track", track)
            if tracked is not None:
                held.append(tracked)
                held_bytes += sum(frame.rgb.nbytes for frame in event.frames)
            yield from release(trace_back_bytes)
            continue
        yield from release(0)  # a source's end, or the next source's start
        if isinstance(event, SourceStarted):
            tracker = IoUTracker(options.track_iou, options.max_missed)
        yield event


def landmarks_from_box(box: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Template landmarks placed in a box: a fallback when detected landmarks are unusable."""
    x1, y1, x2, y2 = (float(value) for value in box)
    template = np.asarray(preprocessing.landmarks, dtype=np.float32) / preprocessing.crop_size
    return np.stack([x1 + template[:, 0] * (x2 - x1), y1 + template[:, 1] * (y2 - y1)], axis=1)


def crop_faces(events: Iterable[Event], preprocessing: Preprocessing) -> Iterator[Event]:
    """Cut each face out of its frame, aligned like a FER2013 face; then let the frames go."""
    size = preprocessing.crop_size

    def crop(batch: FrameBatch) -> FrameBatch:
        faces = batch.faces
        crops = np.empty((len(faces), size, size), np.uint8)
        for frame in batch.frames:
            rows = np.flatnonzero(faces.frame_index == frame.index)
            if len(rows) == 0:
                continue
            gray = to_grayscale(frame.rgb)
            for row in rows:
                try:
                    crops[row] = align_face(gray, faces.landmarks[row], preprocessing)
                except ValueError:
                    crops[row] = align_face(gray, landmarks_from_box(faces.boxes[row], preprocessing), preprocessing)
        return replace(batch, frames=[], faces=faces.replace(crops=crops))

    for event in events:
        if isinstance(event, FrameBatch):
            event = _guarded(event, "crop", crop)
            if event is None:
                continue
        yield event


def classify_faces(events: Iterable[Event], classifiers: Mapping[str, SequenceClassifier], batch_size: int) -> Iterator[Event]:
    """Classify crops in batches of about `batch_size` across frames and files, each face by the
    classifier of its source's media type ("image", "video"); events leave in order."""
    pending: list[Event] = []
    pending_faces = 0

    def flush() -> Iterator[Event]:
        nonlocal pending, pending_faces
        by_classifier: dict[int, list[FrameBatch]] = {}
        for event in pending:
            if isinstance(event, FrameBatch) and not event.run.failed:
                by_classifier.setdefault(id(classifiers[event.run.source.media_type]), []).append(event)
        classified: dict[int, FrameBatch] = {}
        for batches in by_classifier.values():
            classifier = classifiers[batches[0].run.source.media_type]
            try:
                probabilities, evidence = _classify_in_chunks(classifier, batches, batch_size)
            except Exception as error:  # noqa: BLE001 - one bad batch must not end the run
                for batch in batches:
                    batch.run.fail("classify", error)
            else:
                classified.update({
                    id(batch): replace(batch, faces=batch.faces.replace(probabilities=part, crops=None, evidence=shown))
                    for batch, part, shown in zip(batches, probabilities, evidence)
                })
        events_out, pending, pending_faces = pending, [], 0
        for event in events_out:
            event = classified.get(id(event), event)
            if isinstance(event, FrameBatch) and event.run.failed:
                continue
            if isinstance(event, SourceFinished):
                classifiers[event.run.source.media_type].forget_source(event.run.number)
            yield event

    for event in events:
        if isinstance(event, FrameBatch):
            if event.run.failed:
                continue
            pending_faces += len(event.faces)
        pending.append(event)
        if not isinstance(event, SourceStarted) and pending_faces >= batch_size:
            yield from flush()
    yield from flush()


def _classify_in_chunks(
    classifier: SequenceClassifier, batches: list[FrameBatch], batch_size: int
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Probabilities for every face of `batches`, in chunks of `batch_size` crops, split back per
    batch; and the evidence behind them when the look-ahead stage needs it (bidirectional)."""
    crops = np.concatenate([batch.faces.crops for batch in batches])
    numbers = np.concatenate([np.full(len(batch.faces), batch.run.number) for batch in batches])
    frame_index = np.concatenate([batch.faces.frame_index for batch in batches])
    track_id = np.concatenate([batch.faces.track_id for batch in batches])
    probability_parts, evidence_parts = [], []
    for start in range(0, len(crops), batch_size):
        end = min(start + batch_size, len(crops))
        features = torch.from_numpy(classifier.encode(crops[start:end])).to(classifier.device)
        probabilities, evidence = classifier.step_with_evidence(features, numbers[start:end], frame_index[start:end], track_id[start:end])
        probability_parts.append(probabilities)
        evidence_parts.append(evidence)
    empty = np.empty((0, len(classifier.class_names)), np.float32)
    splits = np.cumsum([len(batch.faces) for batch in batches])[:-1]
    probabilities = np.split(np.concatenate(probability_parts) if probability_parts else empty, splits)
    if classifier.temporal != "bidirectional":
        return probabilities, [None] * len(batches)
    return probabilities, np.split(np.concatenate(evidence_parts) if evidence_parts else empty, splits)


def look_ahead(events: Iterable[Event], window: int = defaults.TEMPORAL_WINDOW) -> Iterator[Event]:
    """The backward half of `temporal="bidirectional"` (fer_batch.temporal): each video batch waits
    until the faces its backward pass reads have been classified (one to two windows of frames
    ahead, or the end of the video); then its forward-filtered probabilities are smoothed with
    the backward messages. Memory stays bounded by the windows, not by the video."""
    held: list[FrameBatch] = []
    context: list[Faces] = []  # faces (with evidence) that a held batch's backward pass may read
    newest = -1

    def ready(batch: FrameBatch, finished: bool) -> bool:
        return finished or not len(batch.faces) or newest >= look_ahead_end(int(batch.faces.frame_index.max()), window)

    def emit(batch: FrameBatch) -> FrameBatch:
        faces = batch.faces
        if len(faces):
            first = int(faces.frame_index.min())
            pool = Faces.concat([part.select(part.frame_index >= first) for part in context])
            backward = np.empty((len(faces), faces.probabilities.shape[1]), np.float64)
            for track in np.unique(faces.track_id):
                rows = np.flatnonzero(pool.track_id == track)
                targets = np.searchsorted(pool.frame_index[rows], faces.frame_index[faces.track_id == track])
                backward[faces.track_id == track] = backward_for(pool.evidence[rows], pool.frame_index[rows], targets, window)
            faces = faces.replace(probabilities=smooth(faces.probabilities, backward).astype(np.float32))
        return replace(batch, faces=faces.replace(evidence=None))

    def release(finished: bool) -> Iterator[Event]:
        nonlocal context
        while held and ready(held[0], finished):
            yield emit(held.pop(0))
        firsts = [int(batch.faces.frame_index.min()) for batch in held if len(batch.faces)]
        if not firsts:
            context = [] if not held else context
            return
        context = [part for part in context if int(part.frame_index.max()) >= min(firsts)]

    for event in events:
        if isinstance(event, FrameBatch) and event.faces.evidence is not None and event.run.source.media_type == "video":
            held.append(event)
            if len(event.faces):
                context.append(event.faces)
                newest = max(newest, int(event.faces.frame_index.max()))
            yield from release(False)
            continue
        if isinstance(event, SourceFinished):
            yield from release(True)
            newest = -1
        if isinstance(event, FrameBatch) and event.faces.evidence is not None:
            event = replace(event, faces=event.faces.replace(evidence=None))  # an image: one frame, nothing ahead
        yield event


# -- sinks and the run ----------------------------------------------------------------
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


class Annotator:
    """Holds the loaded detector and models; run it with any `RunOptions`, as often as needed.

    Two checkpoints classify (defaults.weights_by_media_type): the photo encoder the faces of
    images, the video encoder those of videos; one object when both are the same file."""

    def __init__(
        self,
        device: str = defaults.DEVICE,
        weights: str | Path | None = None,
        threads: int | None = None,
        precision: str = defaults.PRECISION,
        video_weights: str | Path | None = None,
    ) -> None:
        self.model_options = ModelOptions(
            device=device, weights=str(weights) if weights else None, video_weights=str(video_weights) if video_weights else None,
            threads=threads, precision=precision,
        )
        self.threads = configure_threads(threads)
        self.device = resolve_device(device)
        self.checkpoints = load_media_checkpoints(weights, video_weights, precision=precision, device=self.device)
        self.detector = FaceDetector(self.device)
        self.detect_workers, self.detect_threads = detection_workers(self.device, self.threads)

    @property
    def checkpoint(self) -> Checkpoint:
        """The photo encoder's checkpoint; its labels and crop template are the run's."""
        return self.checkpoints["image"]

    @property
    def video_checkpoint(self) -> Checkpoint:
        return self.checkpoints["video"]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.checkpoint.class_names

    def classifiers(self, temporal: str = defaults.TEMPORAL) -> dict[str, SequenceClassifier]:
        """A fresh classifier per media type for one run, shared when one checkpoint serves both."""
        return classifiers_by_media_type(self.checkpoints, self.device, temporal)

    def detect(self, events: Iterable[Event], options: RunOptions) -> Iterator[Event]:
        """The detection stage (`detect_faces`) with this annotator's detector and its split of the
        threads (fer_batch.runtime.detection_workers)."""
        return detect_faces(events, self.detector, options, self.detect_workers, self.detect_threads, self.threads)

    def run(
        self, paths: list[Path | str], options: RunOptions | None = None, progress: ProgressListener | None = None
    ) -> "AnnotationRun":
        options = (options or RunOptions()).for_device(self.device)  # as run and recorded on this device
        sources, unsupported = discover_sources([Path(path) for path in paths], options.glob, options.exclude)
        return AnnotationRun(self, options, [str(path) for path in paths], sources, unsupported, progress)


class AnnotationRun:
    """Iterate to get classified `Faces` batches; `summary()` and `metadata()` are complete once it ends."""

    def __init__(
        self,
        annotator: Annotator,
        options: RunOptions,
        inputs: list[str],
        sources: list[MediaSource],
        unsupported: list[tuple[str, str]],
        progress: ProgressListener | None = None,
    ) -> None:
        self.annotator = annotator
        self.options = options
        self.inputs = inputs
        self.sources = sources
        self.class_names = annotator.class_names
        self.progress = progress or _SilentProgress()
        self.statistics = RunStatistics(
            self.class_names, [ErrorRecord(name, "input", message) for name, message in unsupported]
        )
        self.started_at = time.time()
        self.finished_at: float | None = None
        # Called as each source finishes, after its last batch was yielded: (source, its summary rows).
        self.source_finished_listeners: list[Callable[[MediaSource, RunSummary], None]] = []

    def events(self) -> Iterator[Event]:
        """The stage chain: frames -> detect -> track -> crop -> classify."""
        annotator, options = self.annotator, self.options
        events = read_frames(self.sources, options)
        events = annotator.detect(events, options)
        events = track_faces(events, options, annotator.detector.refine)
        events = crop_faces(events, annotator.checkpoint.preprocessing)
        events = classify_faces(events, annotator.classifiers(options.temporal), options.batch_size)
        return look_ahead(events) if options.temporal == "bidirectional" else events

    def __iter__(self) -> Iterator[Faces]:
        total = len(self.sources)
        for event in self.events():
            run = event.run
            if isinstance(event, SourceStarted):
                self.statistics.source_started(run.number, run.source)
                self.progress.source_started(run.source, run.number, total, run.expected_frames)
            elif isinstance(event, FrameBatch):
                self.statistics.frames_annotated(run.number, event.frame_count, event.faces)
                self.progress.frames_done(event.frame_count)
                if len(event.faces):
                    yield event.faces
            else:
                self.statistics.source_finished(run.number, run.frames_read, run.errors)
                self.progress.source_finished(run.source)
                if self.source_finished_listeners:
                    finished = self.statistics.source_summary(run.number)
                    for listener in self.source_finished_listeners:
                        listener(run.source, finished)
        self.finished_at = time.time()

    @property
    def elapsed_s(self) -> float:
        return (self.finished_at or time.time()) - self.started_at

    def summary(self) -> RunSummary:
        return self.statistics.summary(self.elapsed_s)

    def metadata(self) -> RunMetadata:
        """How the output was made and where its media are, by the options' own names."""
        annotator = self.annotator
        return RunMetadata(
            version=__version__,
            weights=annotator.checkpoint.name,
            weights_sha256=annotator.checkpoint.sha256 or "",
            video_weights=annotator.video_checkpoint.name,
            video_weights_sha256=annotator.video_checkpoint.sha256 or "",
            video_precision=annotator.video_checkpoint.precision,
            class_names=list(self.class_names),
            device=str(annotator.device),
            precision=annotator.checkpoint.precision,
            options=options_document(annotator.model_options, self.options),
            inputs=self.inputs,
            source_paths={source.relative: str(source.path.resolve()) for source in self.sources},
            elapsed_s=round(self.elapsed_s, 3) if self.finished_at else None,
        )
