"""The Ray Data engine: the same pipeline over a Ray cluster (`fer annotate --engine ray`).

    pip install 'fer-batch[ray]'
    ds = fer_batch.ray.annotate_dataset(["videos/"], segment_s=60)      # a ray.data.Dataset of face rows
    fer_batch.ray.annotate_to_directory(["videos/"], "s3://bucket/results/", workers=8)

How the work is cut and joined again:

1. The driver lists the sources and plans work units: a group of up to `IMAGES_PER_UNIT`
   images, or one time segment of a video. A segment owns frames [owned_start, stop) and
   reads from `overlap` frames earlier, so its tracker has settled by the first frame it
   owns: the overlap covers `max_missed + 2` detector rounds, so any track the whole-video
   tracker still holds at the boundary has been seen in the overlap, and `--fps` sampling
   (which needs one frame to know its bucket) is exact from the second frame on. Segment
   boundaries are multiples of `every_nth * detect_every * detect_batch * small_face_period`
   frames, so keyframes, small-face searches and detector batches fall where they fall in the
   whole video.
2. An actor pool (`workers` actors, each loading the models once; `gpus_per_worker` GPUs
   each on GPU clusters) reads, detects, tracks, aligns and encodes each unit with the local
   engine's own stages, and returns the faces with the CNN features of their crops.
3. Grouped by video, the segments are stitched: in each overlap, a segment's tracks are
   matched to the tracks already joined by the boxes they share on the same frames (the
   detector sees the same frames, so matched boxes are the same boxes); matched tracks keep
   their id, new ones are numbered on in order of appearance, as the local tracker numbers
   them. Then the temporal stage (fer_batch.temporal) runs over each joined track's features
   in frame order, from a zero state, which is what the local engine computes as it streams,
   so probabilities do not depend on where the cuts fell.
4. The face rows are written with Ray Data (`write_parquet`, on a local path or any pyarrow
   filesystem URI such as s3://) as `ray-part-*.parquet` files, each with the run's metadata in
   its footer, beside the same `_summary`, `_tracks`, `_errors` and `_run.json` as the local
   dataset output, so `fer_batch.read_run` and `pd.read_parquet` read both alike. Rows are in
   frame order within a source; the order of sources across part files is not defined.

Ids equal the local engine's where stitching is exact: a track that the local tracker would
have continued across a boundary through a gap longer than the overlap gets a new id here.
Detected boxes are the local engine's exactly; a box refined from a track's predicted box
(between keyframes, where a keyframe's detector missed the face, or a small face between
small-face frames) may differ, mostly by hundredths of a pixel, sometimes by a few pixels
(measured: IoU 0.85 or more with the local box), because the prediction's velocity averages
a past that a segment has seen only since its overlap (where a small face's track may start
only at a small-face frame), and O-Net's search around a weak box keeps whichever shift
scores best, so a small change in the prediction can pick another shift. A refined face
O-Net scores at the refinement threshold may be kept on one side and not the other.
"""

from __future__ import annotations

import math
import pickle
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fer_batch import defaults
from fer_batch.faces import Faces
from fer_batch.media import MediaSource, discover_sources, open_video
from fer_batch.options import ModelOptions, RunOptions, options_document, split_options
from fer_batch.statistics import ErrorRecord, RunStatistics, RunSummary

IMAGES_PER_UNIT = 32


def _ray():
    try:
        import ray
    except ImportError as error:
        raise ImportError("the ray engine needs Ray Data: pip install 'fer-batch[ray]'") from error
    return ray


# -- planning ---------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkUnit:
    """What one actor call does: some images, or frames [start_frame, stop_frame) of one video
    of which it owns [owned_start, stop_frame)."""

    number: int  # position in the plan, which follows the order of the sources
    group: str  # units of one group are stitched together: one video, or one group of images
    sources: tuple[MediaSource, ...]
    source_numbers: tuple[int, ...]  # positions of the sources in the run
    start_frame: int = 0
    owned_start: int = 0
    stop_frame: int | None = None
    segment: int = 0


def overlap_frames(options: RunOptions, video_fps: float) -> int:
    """Frames a segment reads before the first it owns (see the module doc), a multiple of the keyframe step."""
    step = _keyframe_step(options)
    rounds = (options.max_missed + 2) * options.detect_every  # annotated frames
    if options.fps is None:
        frames = rounds * options.every_nth
    else:
        frames = math.ceil(rounds * video_fps / min(options.fps, video_fps)) + 1
    return math.ceil(frames / step) * step


def _keyframe_step(options: RunOptions) -> int:
    """Frames between possible cuts: a cut on this grid starts a detector window where the whole
    video's reader starts one, so the detector sees the same batches of frames (its boxes
    depend, in the last float bits that can tip a choice, on what else is in the batch)."""
    if options.fps is not None:
        return 1
    return options.every_nth * options.detect_every * options.detect_batch * options.small_face_period


def plan_segments(frame_count: int, video_fps: float, options: RunOptions, segment_s: float) -> list[tuple[int, int, int | None]]:
    """(start_frame, owned_start, stop_frame) per segment of a video of `frame_count` frames, for
    `options` as the workers run them (`RunOptions.for_device`).

    One segment (the whole video, as the local engine reads it) when the count is unknown, or
    when `--fps` with `--detect-every` > 1, with small-face searches not on every frame, or with
    `--max-frames` leaves keyframes, small-face frames or the last frame unknowable before reading.
    """
    whole = [(0, 0, None)]
    if frame_count <= 0 or video_fps <= 0 or segment_s <= 0:
        return whole
    if options.fps is not None and (options.detect_every > 1 or options.small_face_period > 1 or options.max_frames is not None):
        return whole
    end = frame_count
    if options.max_frames is not None:
        end = min(end, (options.max_frames - 1) * options.every_nth + 1)
    step = _keyframe_step(options)
    length = max(step, round(segment_s * video_fps / step) * step)
    overlap = overlap_frames(options, video_fps)
    if end <= length:
        return whole if options.max_frames is None else [(0, 0, end)]
    segments = []
    for owned_start in range(0, end, length):
        stop = owned_start + length
        segments.append((max(0, owned_start - overlap), owned_start, None if stop >= end and options.max_frames is None else min(stop, end)))
    return segments


def plan_units(sources: list[MediaSource], options: RunOptions, segment_s: float) -> list[WorkUnit]:
    """Work units in the order of the sources: runs of images grouped, each video cut in segments."""
    units: list[WorkUnit] = []
    images: list[tuple[int, MediaSource]] = []

    def flush_images() -> None:
        if images:
            number = len(units)
            units.append(WorkUnit(number, f"images:{number}", tuple(s for _, s in images), tuple(i for i, _ in images)))
            images.clear()

    for position, source in enumerate(sources):
        if source.media_type == "image":
            images.append((position, source))
            if len(images) >= IMAGES_PER_UNIT:
                flush_images()
            continue
        flush_images()
        try:
            capture, info = open_video(source.path)
            capture.release()
            segments = plan_segments(info.frame_count, info.fps, options, segment_s)
        except Exception:  # noqa: BLE001 - unreadable: one unit, whose worker records the error
            segments = [(0, 0, None)]
        for index, (start, owned, stop) in enumerate(segments):
            units.append(WorkUnit(len(units), f"video:{position}", (source,), (position,), start, owned, stop, index))
    flush_images()
    return units


# -- the worker -------------------------------------------------------------------------
@dataclass
class SourcePiece:
    """One source's share of a unit: its faces (tracked within the unit) and their CNN features."""

    source: MediaSource
    number: int
    faces: Faces
    features: np.ndarray  # (N, D) float32
    frames_annotated: int  # annotated frames the unit owns
    frames_read: int  # frames decoded that the unit owns
    errors: list[ErrorRecord] = field(default_factory=list)


@dataclass
class UnitResult:
    unit: WorkUnit
    pieces: list[SourcePiece]


class UnitWorker:
    """A Ray Data actor: loads the detector and model once, then runs work units."""

    def __init__(self, model_options: dict[str, Any], run_options: dict[str, Any]) -> None:
        from fer_batch.pipeline import Annotator

        self.annotator = Annotator(**model_options)
        self.options = RunOptions(**run_options)
        self.classifiers = self.annotator.classifiers()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        results = [run_unit(pickle.loads(spec), self.annotator, self.options, self.classifiers) for spec in batch["unit"]]
        return {
            "group": [result.unit.group for result in results],
            "number": [result.unit.number for result in results],
            "result": [pickle.dumps(result, protocol=5) for result in results],
        }


def run_unit(unit: WorkUnit, annotator: Any, options: RunOptions, classifiers: dict[str, Any]) -> UnitResult:
    """The local engine's stages on one unit, stopping before the GRU: faces and their features
    (from the encoder of each source's media type, `Annotator.classifiers`)."""
    from fer_batch.pipeline import FrameBatch, SourceFinished, crop_faces, read_frames, track_faces

    frame_range = (unit.start_frame, unit.stop_frame) if unit.sources[0].media_type == "video" else None
    options = replace(options, max_frames=None) if frame_range and unit.stop_frame is not None else options
    owned: dict[int, int] = {}

    def count_owned(events):  # annotated frames this unit owns, seen before the crop stage lets frames go
        for event in events:
            if isinstance(event, FrameBatch):
                owned[event.run.number] = owned.get(event.run.number, 0) + sum(
                    frame.index >= unit.owned_start for frame in event.frames)
            yield event

    events = read_frames(list(unit.sources), options, frame_range)
    events = annotator.detect(count_owned(events), options)
    events = track_faces(events, options, annotator.detector.refine)
    events = crop_faces(events, annotator.checkpoint.preprocessing)
    collected: dict[int, list[Faces]] = {}
    pieces: list[SourcePiece] = []
    for event in events:
        if isinstance(event, FrameBatch):
            collected.setdefault(event.run.number, []).append(event.faces)
        elif isinstance(event, SourceFinished):
            run = event.run
            source = unit.sources[run.number]
            batches = [faces for faces in collected.pop(run.number, []) if len(faces)]
            faces = Faces.concat(batches) if batches else Faces.empty(source.relative, source.media_type)
            classifier = classifiers[source.media_type]
            size = classifier.preprocessing.crop_size
            crops = faces.crops if faces.crops is not None else np.empty((0, size, size), np.uint8)
            features = np.concatenate(
                [classifier.encode(crops[start:start + options.batch_size]) for start in range(0, len(crops), options.batch_size)]
            ) if len(crops) else classifier.encode(crops)
            pieces.append(SourcePiece(
                source, unit.source_numbers[run.number], faces.replace(crops=None), features, owned.get(run.number, 0),
                max(0, run.frames_read - (unit.owned_start - unit.start_frame)), list(run.errors),
            ))
    return UnitResult(unit, pieces)


# -- stitching ------------------------------------------------------------------------------
def stitch_segments(pieces: list[SourcePiece], owned_starts: list[int], min_iou: float = 0.5) -> tuple[Faces, np.ndarray]:
    """One video's segments joined: faces of owned frames only, track ids continued across cuts."""
    from fer_batch.tracking import box_iou

    joined: Faces | None = None
    joined_features: list[np.ndarray] = []
    next_id = 1
    for piece, owned_start in zip(pieces, owned_starts):
        faces, features = piece.faces, piece.features
        if not len(faces):
            continue
        local_ids = faces.track_id.astype(np.int64)
        mapping: dict[int, int] = {}
        if joined is not None and len(joined):
            votes: dict[tuple[int, int], int] = {}
            overlap = np.flatnonzero(faces.frame_index < owned_start)
            for frame in np.unique(faces.frame_index[overlap]):
                mine = overlap[faces.frame_index[overlap] == frame]
                theirs = np.flatnonzero(joined.frame_index == frame)
                if not len(theirs):
                    continue
                overlaps = box_iou(faces.boxes[mine].astype(np.float64), joined.boxes[theirs].astype(np.float64))
                for row, column in zip(*np.nonzero(overlaps >= min_iou)):
                    key = (int(local_ids[mine[row]]), int(joined.track_id[theirs[column]]))
                    votes[key] = votes.get(key, 0) + 1
            taken: set[int] = set()
            for (local, global_id), _ in sorted(votes.items(), key=lambda item: (-item[1], item[0])):
                if local not in mapping and global_id not in taken:
                    mapping[local] = global_id
                    taken.add(global_id)
        keep = faces.frame_index >= owned_start
        for local in np.unique(local_ids[keep]):  # new tracks, numbered in the order they were created
            if int(local) not in mapping:
                mapping[int(local)] = next_id
                next_id += 1
        kept = faces.select(keep)
        global_ids = np.array([mapping[int(local)] for local in local_ids[keep]], np.int32)
        order = np.lexsort((global_ids, kept.frame_index))
        kept = kept.select(order).replace(track_id=global_ids[order])
        joined = kept if joined is None else Faces.concat([joined, kept])
        joined_features.append(features[keep][order])
        next_id = max(next_id, int(global_ids.max(initial=0)) + 1)
    if joined is None:
        first = pieces[0].source
        return Faces.empty(first.relative, first.media_type).replace(track_id=np.empty(0, np.int32)), np.empty((0, 0), np.float32)
    return joined, np.concatenate(joined_features)


def classify_tracks(classifier: Any, faces: Faces, features: np.ndarray) -> np.ndarray:
    """Probabilities per face: the temporal stage (GRU and filter) over each track, in frame order."""
    probabilities = np.empty((len(faces), len(classifier.class_names)), np.float32)
    order = np.lexsort((faces.frame_index, faces.track_id))
    starts = np.flatnonzero(np.r_[True, faces.track_id[order][1:] != faces.track_id[order][:-1]])
    for rows in np.split(order, starts[1:]):
        if len(rows):
            probabilities[rows] = classifier.track_probabilities(features[rows], faces.frame_index[rows])
    return probabilities


class GroupStitcher:
    """A Ray Data actor for one group of units: stitch, classify, and summarise each source."""

    def __init__(self, model_options: dict[str, Any], metadata_json: str, temporal: str) -> None:
        from fer_batch.classifier import classifiers_by_media_type
        from fer_batch.model import load_media_checkpoints
        from fer_batch.runtime import configure_threads, resolve_device

        configure_threads(model_options.get("threads"))
        device = resolve_device(model_options.get("device", defaults.DEVICE))
        # the GRU and heads only: the encoders ran in the unit workers
        checkpoints = load_media_checkpoints(model_options.get("weights"), model_options.get("video_weights"))
        self.classifiers = classifiers_by_media_type(checkpoints, device, temporal)
        self.metadata_json = metadata_json

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        results = sorted((pickle.loads(blob) for blob in batch["result"]), key=lambda result: result.unit.number)
        return {name: [value] for name, value in stitch_group(results, self.classifiers, self.metadata_json).items()}


def stitch_group(results: list[UnitResult], classifiers: dict[str, Any], metadata_json: str) -> dict[str, Any]:
    """One group's face rows (Arrow IPC) and summary rows (pickled frames), from its unit results in order."""
    from fer_batch.results import METADATA_KEY
    from fer_batch.schema import annotation_schema
    from fer_batch.writers import faces_to_record_batch

    names = classifiers["image"].class_names
    statistics = RunStatistics(names)
    tables: list[pa.Table] = []
    by_source: dict[int, list[tuple[SourcePiece, int]]] = {}
    for result in results:
        for piece in result.pieces:
            by_source.setdefault(piece.number, []).append((piece, result.unit.owned_start))
    summaries = []
    for number in sorted(by_source):
        pieces = [piece for piece, _ in by_source[number]]
        source = pieces[0].source
        faces, features = stitch_segments(pieces, [start for _, start in by_source[number]])
        faces = faces.replace(probabilities=classify_tracks(classifiers[source.media_type], faces, features) if len(faces)
                              else np.empty((0, len(names)), np.float32))
        errors = list(dict.fromkeys(error for piece in pieces for error in piece.errors))  # overlaps repeat them
        statistics.source_started(number, source)
        statistics.frames_annotated(number, sum(piece.frames_annotated for piece in pieces), faces)
        statistics.source_finished(number, sum(piece.frames_read for piece in pieces), errors)
        summaries.append((number, statistics.source_summary(number)))
        if len(faces):
            tables.append(pa.Table.from_batches([faces_to_record_batch(faces, names)]))
    table = pa.concat_tables(tables) if tables else annotation_schema(names).empty_table()
    table = table.replace_schema_metadata({METADATA_KEY: metadata_json})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return {"number": results[0].unit.number, "faces": sink.getvalue().to_pybytes(), "summaries": pickle.dumps(summaries)}


def _face_rows(batch: dict[str, np.ndarray]) -> pa.Table:
    """The stitched groups' face tables, concatenated (Ray writes one Parquet file per write task)."""
    tables = [pa.ipc.open_stream(pa.py_buffer(blob)).read_all() for blob in batch["faces"]]
    return pa.concat_tables(tables)


# -- the engine ----------------------------------------------------------------------------
@dataclass
class RayPlan:
    model_options: dict[str, Any]
    run_options: RunOptions
    sources: list[MediaSource]
    unsupported: list[tuple[str, str]]
    units: list[WorkUnit]
    metadata: Any  # RunMetadata


def _plan(paths: list[str | Path], options: dict[str, Any], segment_s: float) -> RayPlan:
    import torch

    from fer_batch import __version__
    from fer_batch.model import load_media_checkpoints
    from fer_batch.quantize import resolve_precision
    from fer_batch.results import RunMetadata
    from fer_batch.runtime import resolve_device

    model_dict, run_options = split_options(options)
    model_options = ModelOptions(**model_dict)
    sources, unsupported = discover_sources([Path(path) for path in paths], run_options.glob, run_options.exclude)
    # For the metadata only, and checked as the workers will: a bad pair fails here, before the cluster starts.
    checkpoints = load_media_checkpoints(model_options.weights, model_options.video_weights)
    checkpoint, video_checkpoint = checkpoints["image"], checkpoints["video"]
    # The metadata's precision is the workers': cuda means fp32 even on a driver without a GPU;
    # auto is judged as the driver sees it. Resolved, not built: the driver runs no encoder.
    device = torch.device("cuda") if model_options.device.startswith("cuda") else resolve_device(model_options.device)
    precision = resolve_precision(model_options.precision, device, checkpoint.has_int8_encoders)
    video_precision = resolve_precision(model_options.precision, device, video_checkpoint.has_int8_encoders)
    run_options = run_options.for_device(device)  # the workers run with these, cut where they batch
    document = options_document(model_options, run_options)
    document.update({"engine": "ray", "segment_s": segment_s})
    metadata = RunMetadata(
        version=__version__, weights=checkpoint.name, weights_sha256=checkpoint.sha256 or "",
        class_names=list(checkpoint.class_names), device=model_options.device, options=document,
        precision=precision, video_weights=video_checkpoint.name, video_weights_sha256=video_checkpoint.sha256 or "",
        video_precision=video_precision, inputs=[str(path) for path in paths],
        source_paths={source.relative: str(source.path.resolve()) for source in sources}, elapsed_s=None,
    )
    return RayPlan(asdict(model_options), run_options, sources, unsupported, plan_units(sources, run_options, segment_s), metadata)


def _stitched(plan: RayPlan, workers: int | None, gpus_per_worker: float) -> Any:
    """Units -> actor pool -> grouped by video -> stitched groups (one row each)."""
    ray = _ray()
    threads_per_worker = plan.model_options.get("threads") or 1  # --threads: each worker's, 1 unless given
    model_options = dict(plan.model_options, threads=threads_per_worker)
    items = [{"group": unit.group, "number": unit.number, "unit": pickle.dumps(unit)} for unit in plan.units]
    pool = workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads_per_worker)
    units = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    annotated = units.map_batches(
        UnitWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=max(1, min(pool, len(items)))), num_cpus=threads_per_worker,
        num_gpus=gpus_per_worker, fn_constructor_args=(model_options, asdict(plan.run_options)),
    )
    # A few partitions: there are few groups per machine, and each shuffle partition costs an aggregator.
    partitions = max(1, min(len({unit.group for unit in plan.units}), pool))
    return annotated.groupby("group", num_partitions=partitions).map_groups(
        GroupStitcher, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=threads_per_worker,
        fn_constructor_args=(model_options, plan.metadata.to_json(), plan.run_options.temporal),
    )


def _gpus(device: str) -> float:
    ray = _ray()
    if device == "cuda" or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0):
        return 1.0
    return 0.0


def configure_progress(enabled: bool) -> None:
    """Ray Data's own progress bars and progress log lines, on or off (`--quiet`)."""
    import logging

    _ray().data.DataContext.get_current().enable_progress_bars = enabled
    logging.getLogger("ray.data").setLevel(logging.INFO if enabled else logging.WARNING)


def init_ray(address: str | None = None) -> None:
    """Connect to the cluster at `address` (or start a local one), unless this process already has."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False, logging_level="warning")


def annotate_dataset(
    paths: list[str | Path],
    segment_s: float = defaults.SEGMENT_S,
    workers: int | None = None,
    ray_address: str | None = None,
    **options: Any,
) -> Any:
    """A ray.data.Dataset of face rows (the face table's schema) for these inputs; lazy until consumed.

    `workers` annotators run at once (default: the cluster's CPUs over `threads`, each worker's
    torch threads, 1 unless given); each takes a GPU when `device` is cuda, or auto on a cluster
    with GPUs. Options are `fer annotate`'s, by the same names.
    """
    init_ray(ray_address)
    plan = _plan(paths, options, segment_s)
    stitched = _stitched(plan, workers, _gpus(plan.model_options["device"]))
    return stitched.map_batches(_face_rows, batch_format="numpy", batch_size=None)


@dataclass
class RayResult:
    directory: str
    rows: int
    summary: RunSummary
    units: int  # work units (image groups and video segments) the run was cut into

    @property
    def out_path(self) -> str:
        return self.directory


class _PartNames:
    """Ray's FilenameProvider interface: part files named like the local engine's, marked as Ray's."""

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"ray-part-{task_index:05d}-{write_uuid}.parquet"

    def get_filename_for_block(self, block: Any, write_uuid: str, task_index: int, block_index: int) -> str:
        return self.get_filename_for_task(write_uuid, task_index)


def annotate_to_directory(
    paths: list[str | Path],
    out: str | Path,
    segment_s: float = defaults.SEGMENT_S,
    workers: int | None = None,
    ray_address: str | None = None,
    **options: Any,
) -> RayResult:
    """Annotate on Ray into a dataset folder (a local path or a pyarrow filesystem URI such as s3://...)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from fer_batch.results import DATASET_RUN_DOCUMENT
    from fer_batch.schema import ERROR_SCHEMA, source_summary_schema, track_summary_schema

    started = time.time()
    init_ray(ray_address)
    plan = _plan(paths, options, segment_s)
    stitched = _stitched(plan, workers, _gpus(plan.model_options["device"])).materialize()
    filesystem, root = pafs.FileSystem.from_uri(str(out)) if "://" in str(out) else (pafs.LocalFileSystem(), str(Path(out).resolve()))
    filesystem.create_dir(root, recursive=True)
    faces = stitched.map_batches(_face_rows, batch_format="numpy", batch_size=None)
    faces.write_parquet(root, filesystem=filesystem, filename_provider=_PartNames())
    summaries = [item for blob in stitched.select_columns(["summaries"]).to_pandas()["summaries"] for item in pickle.loads(blob)]
    summaries.sort(key=lambda item: item[0])
    names = tuple(plan.metadata.class_names)
    input_errors = [ErrorRecord(name, "input", message) for name, message in plan.unsupported]
    parts = [summary for _, summary in summaries]
    summary = RunSummary(
        names,
        _concat([part.sources for part in parts], source_summary_schema(names)),
        _concat([part.tracks for part in parts], track_summary_schema(names)),
        _concat([pd.DataFrame([vars(error) for error in input_errors], columns=ERROR_SCHEMA.names)] + [part.errors for part in parts], ERROR_SCHEMA),
        time.time() - started,
    )
    metadata = replace(plan.metadata, elapsed_s=round(summary.elapsed_s, 3))
    tables = {"_summary": (summary.sources, source_summary_schema(names)), "_tracks": (summary.tracks, track_summary_schema(names)),
              "_errors": (summary.errors, ERROR_SCHEMA)}
    for name, (frame, schema) in tables.items():
        table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False).replace_schema_metadata(metadata.parquet_metadata())
        pq.write_table(table, f"{root}/{name}.parquet", filesystem=filesystem, compression="zstd")
    with filesystem.open_output_stream(f"{root}/{DATASET_RUN_DOCUMENT}") as stream:
        stream.write(metadata.to_json().encode())
    rows = int(summary.sources.faces.sum()) if len(summary.sources) else 0  # one row per face: no second pass over the data
    return RayResult(str(out), rows, summary, len(plan.units))


def _concat(frames: list[pd.DataFrame], schema: pa.Schema) -> pd.DataFrame:
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return pd.DataFrame(columns=schema.names)
    return pa.Table.from_pandas(pd.concat(frames, ignore_index=True), schema=schema, preserve_index=False).to_pandas()

