"""The options of `fer annotate`, with one name each from the CLI flag to the stage that reads them.

`--detect-scale` is `detect_scale` here, in `fer_batch.annotate(..., detect_scale=0.5)`
and in the metadata of every output. Options come in two groups:

- `ModelOptions` (device, weights, threads, precision) decide what an `Annotator` loads; changing
  them means loading again.
- `RunOptions` (everything else) are per run: one loaded annotator runs with any of them.

Default values live in `fer_batch.defaults`; the CLI and these classes both read them
there, and a test checks that the CLI's flags and defaults equal these fields.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from fer_batch import defaults


@dataclass(frozen=True)
class ModelOptions:
    """What an Annotator loads: on which device, which weights, with how many CPU threads, in
    which arithmetic (precision: auto, fp32 or int8; fer_batch.quantize)."""

    device: str = defaults.DEVICE
    weights: str | None = None  # None: the photo encoder shipped inside the package
    # None: `weights` when that is given, else the video encoder shipped inside the package
    # (defaults.weights_by_media_type)
    video_weights: str | None = None
    threads: int | None = None  # None: the CPUs this process may use
    precision: str = defaults.PRECISION

    def __post_init__(self) -> None:
        from fer_batch.quantize import PRECISIONS

        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        for name in ("weights", "video_weights"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, str(value))


@dataclass(frozen=True)
class RunOptions:
    """Per-run options: which files and frames, how faces are detected, tracked and batched."""

    glob: tuple[str, ...] = ()  # keep files whose relative path or name matches
    exclude: tuple[str, ...] = ()  # skip files whose relative path or name matches
    every_nth: int = defaults.EVERY_NTH
    fps: float | None = None  # about this many annotated frames per second of video
    max_frames: int | None = None  # per video
    threshold: float = defaults.THRESHOLD  # MTCNN final-stage face probability
    proposal_threshold: float = defaults.PROPOSAL_THRESHOLD  # MTCNN first-stage (P-Net) face probability
    min_face_size: int = defaults.MIN_FACE_SIZE  # original-frame pixels
    detect_scale: float = defaults.DETECT_SCALE  # frames are resized by this before detection
    # These three default by device (None: defaults.DETECT_EVERY / DETECT_BATCH / SMALL_FACES_EVERY,
    # set by `for_device`)
    detect_every: int | None = None  # detector on every k-th annotated frame, tracker in between
    detect_batch: int | None = None  # video frames per detector call
    small_faces_every: int | None = None  # search for faces under small_face_size on every k-th annotated frame
    batch_size: int = defaults.BATCH_SIZE  # face crops per classifier batch
    track_iou: float = defaults.TRACK_IOU  # least overlap of a track's predicted box and a detection
    max_missed: int = defaults.MAX_MISSED  # detection rounds a track survives unmatched
    temporal: str = defaults.TEMPORAL  # bidirectional, causal or none (fer_batch.temporal)

    def __post_init__(self) -> None:
        for name in ("glob", "exclude"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        checks = [
            (self.every_nth >= 1, "every_nth must be at least 1"),
            (self.fps is None or self.fps > 0, "fps must be positive"),
            (self.max_frames is None or self.max_frames >= 1, "max_frames must be at least 1"),
            (0.0 < self.threshold < 1.0, "threshold must be between 0 and 1"),
            (0.0 < self.proposal_threshold < 1.0, "proposal_threshold must be between 0 and 1"),
            (self.min_face_size >= 1, "min_face_size must be at least 1 pixel"),
            (0.0 < self.detect_scale <= 4.0, "detect_scale must be in (0, 4]"),
            (self.detect_every is None or self.detect_every >= 1, "detect_every must be at least 1"),
            (self.detect_batch is None or self.detect_batch >= 1, "detect_batch must be at least 1"),
            (self.small_faces_every is None or self.small_faces_every >= 1, "small_faces_every must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (0.0 <= self.track_iou <= 1.0, "track_iou must be between 0 and 1"),
            (self.max_missed >= 0, "max_missed must be at least 0"),
            (self.temporal in ("bidirectional", "causal", "none"), "temporal must be bidirectional, causal or none"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def small_face_size(self) -> int:
        """Faces under this many pixels are searched for only on small-face frames (`small_faces_every`)."""
        return math.ceil(self.min_face_size * defaults.SMALL_FACE_FACTOR)

    @property
    def small_face_period(self) -> int:
        """Detector frames from one small-face search to the next: `small_faces_every` annotated
        frames rounded up to a whole number of detector frames (options `for_device`)."""
        if self.small_faces_every is None or self.detect_every is None:
            raise ValueError("small_faces_every and detect_every depend on the device: use RunOptions.for_device(device) first")
        return math.ceil(self.small_faces_every / self.detect_every)

    def for_device(self, device: "str | object") -> "RunOptions":
        """These options with the device-dependent ones left unset (None) given their defaults for
        `device` (a torch device or its name): the options a run on it uses and records."""
        kind = defaults.device_kind(device)
        return self.replace(
            detect_every=defaults.DETECT_EVERY[kind] if self.detect_every is None else self.detect_every,
            detect_batch=defaults.DETECT_BATCH[kind] if self.detect_batch is None else self.detect_batch,
            small_faces_every=defaults.SMALL_FACES_EVERY[kind] if self.small_faces_every is None else self.small_faces_every,
        )

    def replace(self, **changes: Any) -> "RunOptions":
        return dataclasses.replace(self, **changes)


def option_names(options_class: type) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(options_class))


MODEL_OPTION_NAMES = option_names(ModelOptions)
RUN_OPTION_NAMES = option_names(RunOptions)
ALL_OPTION_NAMES = MODEL_OPTION_NAMES + RUN_OPTION_NAMES


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], RunOptions]:
    """Keyword options as the CLI names them -> (model option values given, RunOptions).

    A name that is not an option is a TypeError that lists the valid ones.
    """
    unknown = sorted(set(options) - set(ALL_OPTION_NAMES))
    if unknown:
        raise TypeError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"valid options are: {', '.join(ALL_OPTION_NAMES)}"
        )
    model = {name: value for name, value in options.items() if name in MODEL_OPTION_NAMES}
    run = RunOptions(**{name: value for name, value in options.items() if name in RUN_OPTION_NAMES})
    return model, run


def options_document(model: ModelOptions, run: RunOptions) -> dict[str, Any]:
    """Both groups as one flat JSON-ready dict, keyed by the option names (for output metadata)."""
    document = {**dataclasses.asdict(model), **dataclasses.asdict(run)}
    return {key: list(value) if isinstance(value, tuple) else value for key, value in document.items()}
