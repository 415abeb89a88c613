"""Media sources and frame decoding.

Directories are walked recursively in a deterministic (sorted) order; images are
decoded with Pillow (EXIF orientation applied, any mode turned into 8-bit RGB);
videos are decoded as a stream by OpenCV in a background thread, so decoding
overlaps detection and no video is ever held in memory whole.
"""

from __future__ import annotations

import fnmatch
import os
import queue
import stat
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

# FFmpeg prints its own complaints about broken files to stderr; the errors table says it better.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageOps, UnidentifiedImageError  # noqa: E402

from fer_batch import defaults  # noqa: E402
from fer_batch.options import RunOptions  # noqa: E402

MediaType = Literal["image", "video"]


class InputPathError(ValueError):
    """An input path that does not exist: a usage error, reported before any work."""


class MediaError(Exception):
    """A file that cannot be read; becomes a row of the errors table, the run goes on."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message


@dataclass(frozen=True)
class MediaSource:
    path: Path
    relative: str  # what the output's `source` column shows
    media_type: MediaType


@dataclass
class Frame:
    source: MediaSource | None  # None for frames that come from no file (e.g. calibration images)
    index: int  # position in the file (0 for an image)
    timestamp_s: float
    rgb: np.ndarray  # (H, W, 3) uint8


def media_type_of(path: Path) -> MediaType | None:
    suffix = path.suffix.lower()
    if suffix in defaults.IMAGE_SUFFIXES:
        return "image"
    if suffix in defaults.VIDEO_SUFFIXES:
        return "video"
    return None


def _matches(relative: str, patterns: tuple[str, ...]) -> bool:
    """Case-insensitive, like extensions: '*.mp4' also takes CLIP.MP4."""
    relative = relative.lower()
    name = relative.rsplit("/", 1)[-1]
    return any(
        fnmatch.fnmatchcase(relative, pattern.lower()) or fnmatch.fnmatchcase(name, pattern.lower())
        for pattern in patterns
    )


def not_a_regular_file(path: Path) -> str | None:
    """Why a path named like media cannot be read as a file, or None. Looks with stat only:
    opening a FIFO would block until something writes to it."""
    if path.is_symlink() and not path.exists():
        return "broken symbolic link; skipped"
    try:
        mode = path.stat().st_mode
    except OSError as error:
        return f"cannot look at the file ({error.strerror or error}); skipped"
    if stat.S_ISREG(mode):
        return None
    kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"not a regular file but {kind}; skipped"


def discover_sources(
    paths: list[Path | str],
    glob: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> tuple[list[MediaSource], list[tuple[str, str]]]:
    """Media files under `paths`, in a deterministic order, and (name, reason) for the files it skips:
    files given by name that are not media, and anything named like media that is not a regular
    file (a FIFO, a socket, a device, a broken link).

    `source` is the path relative to the walked root (a directory argument) or the
    file name (a file argument). Patterns match either that relative path or the file
    name. A path that does not exist raises InputPathError before any work starts.
    """
    missing = [str(path) for path in paths if not Path(path).exists()]
    if missing:
        raise InputPathError(f"input path does not exist: {', '.join(missing)}")
    sources: list[MediaSource] = []
    unsupported: list[tuple[str, str]] = []
    seen: dict[Path, str] = {}  # resolved path -> the name it was first found under
    for argument in paths:
        root = Path(argument)
        if root.is_dir():
            candidates = []
            for directory, subdirectories, files in os.walk(root, followlinks=False):
                subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
                for file in files:
                    if not file.startswith("."):
                        candidates.append(Path(directory) / file)
            candidates.sort(key=lambda path: path.relative_to(root).as_posix())
            for path in candidates:
                relative = path.relative_to(root).as_posix()
                kind = media_type_of(path)
                if (glob and not _matches(relative, glob)) or _matches(relative, exclude):
                    continue
                if kind is None:
                    if path.suffix.lower() in defaults.UNSUPPORTED_MEDIA_SUFFIXES:
                        unsupported.append((relative, f"unsupported format '{path.suffix}'; skipped (convert it to JPEG or MP4)"))
                    continue
                reason = not_a_regular_file(path)
                if reason:
                    unsupported.append((relative, reason))
                    continue
                resolved = path.resolve()
                if resolved in seen:  # a link to, or a second path of, a file already listed
                    unsupported.append((relative, f"the same file as {seen[resolved]}; skipped"))
                    continue
                seen[resolved] = relative
                sources.append(MediaSource(path, relative, kind))
        else:
            kind = media_type_of(root)
            if kind is None:
                unsupported.append((root.name, f"unsupported file type '{root.suffix or '(none)'}'"))
                continue
            if _matches(root.name, exclude):
                continue
            if root.resolve() in seen:
                unsupported.append((root.name, f"the same file as {seen[root.resolve()]}; skipped"))
                continue
            reason = not_a_regular_file(root)
            if reason:
                unsupported.append((root.name, reason))
                continue
            seen[root.resolve()] = root.name
            sources.append(MediaSource(root, root.name, kind))
    return _unique_names(sources), unsupported


def _unique_names(sources: list[MediaSource]) -> list[MediaSource]:
    """Two roots can hold the same relative path; qualify repeats with their parent folder."""
    counts: dict[str, int] = {}
    for source in sources:
        counts[source.relative] = counts.get(source.relative, 0) + 1
    if all(count == 1 for count in counts.values()):
        return sources
    result = []
    used: set[str] = set()
    for source in sources:
        name = source.relative
        if counts[name] > 1:
            name = f"{source.path.parent.name}/{source.path.name}" if "/" not in name else name
            suffix = 2
            base = name
            while name in used:
                name, suffix = f"{base}#{suffix}", suffix + 1
        used.add(name)
        result.append(MediaSource(source.path, name, source.media_type))
    return result


def check_readable(path: Path) -> None:
    """Fail fast, with a clear cause, on empty or unreadable files."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            handle.read(1)
    except PermissionError as error:
        raise MediaError("read", f"permission denied: {error.strerror}") from error
    except OSError as error:
        raise MediaError("read", f"cannot read file: {error.strerror or error}") from error
    if size == 0:
        raise MediaError("read", "empty file (0 bytes)")


def to_rgb8(image: Image.Image) -> np.ndarray:
    """Any Pillow image (palette, gray, RGBA, CMYK, 16-bit) as (H, W, 3) uint8 RGB."""
    if image.mode.startswith("I;16") or image.mode in {"I", "F"}:
        array = np.asarray(image, dtype=np.float64)
        peak = float(array.max()) if array.size else 0.0
        if image.mode.startswith("I;16") or peak > 255:
            array = array / (65535.0 if peak <= 65535 else peak) * 255.0
        gray = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.stack([gray] * 3, axis=-1))
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def read_image(path: Path) -> np.ndarray:
    """Decode an image file (first frame of a GIF/TIFF) into upright RGB uint8."""
    check_readable(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns above 89 M pixels and refuses above 179 M; the limit here is our own.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            width, height = image.size
            if width * height > defaults.MAX_IMAGE_PIXELS:
                raise MediaError(
                    "decode", f"image declares {width}x{height} pixels, over the limit of "
                    f"{defaults.MAX_IMAGE_PIXELS / 1e6:.0f} M pixels; refused without decoding (a decompression bomb?)"
                )
            image.seek(0)
            image.load()
            upright = ImageOps.exif_transpose(image) or image
            return to_rgb8(upright)
    except Image.DecompressionBombError as error:
        raise MediaError("decode", f"image refused as a decompression bomb: {error}") from error
    except UnidentifiedImageError as error:
        raise MediaError("decode", "not a readable image (unrecognised or corrupt data)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise MediaError("decode", f"image decode failed: {error}") from error


@dataclass
class VideoInfo:
    fps: float
    frame_count: int  # as the container reports it; may be 0 or approximate
    width: int
    height: int


def open_video(path: Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    check_readable(path)
    # The decoder uses as many threads as OpenCV does (set with the rest by `--threads`).
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, cv2.getNumThreads()])
    if not capture.isOpened():
        capture.release()
        raise MediaError("decode", "not a readable video (OpenCV/FFmpeg could not open it)")
    info = VideoInfo(
        fps=float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
        frame_count=int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
    )
    return capture, info


class VideoReadReport:
    """Filled in while a video is read: how many frames, and whether it ended early."""

    def __init__(self) -> None:
        self.frames_read = 0
        self.frames_sampled = 0
        self.info: VideoInfo | None = None
        self.truncated_message: str | None = None
        self.reached_end = False  # the decoder ran out of frames (not stopped by max_frames or a segment's end)


def _wanted(index: int, timestamp_s: float, options: RunOptions, fps: float, last_bucket: list[int]) -> bool:
    """Whether a decoded frame is annotated: about `options.fps` per second, else every n-th."""
    if options.fps is not None:
        effective_fps = fps if fps > 0 else 25.0
        if options.fps >= effective_fps:
            return True
        bucket = int(np.floor(timestamp_s * options.fps + 1e-6))
        if bucket == last_bucket[0]:
            return False
        last_bucket[0] = bucket
        return True
    return index % options.every_nth == 0


def iter_video_frames(
    source: MediaSource, options: RunOptions, report: VideoReadReport, start_frame: int = 0, stop_frame: int | None = None
) -> Iterator[Frame]:
    """Sampled frames of one video, decoded one at a time (skipped frames are only grabbed).

    `start_frame`/`stop_frame` read one segment of it (fer_batch.ray): the reader seeks to the
    start and numbers frames as in the whole file. Sampling state needs one frame to settle
    under `fps`, which the segments' overlap provides.
    """
    capture, info = open_video(source.path)
    report.info = info
    last_bucket = [-1]
    try:
        index = 0
        if start_frame > 0:
            _seek(capture, start_frame, source)
            index = start_frame
        while options.max_frames is None or report.frames_sampled < options.max_frames:
            if stop_frame is not None and index >= stop_frame:
                break
            if not capture.grab():
                report.reached_end = True
                break
            report.frames_read += 1
            position_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
            timestamp = position_ms / 1000.0 if position_ms and position_ms > 0 else (
                index / info.fps if info.fps > 0 else float(index)
            )
            if index == 0:
                timestamp = 0.0 if not position_ms or position_ms < 0 else timestamp
            if _wanted(index, timestamp, options, info.fps, last_bucket):
                ok, bgr = capture.retrieve()
                if not ok or bgr is None:
                    break
                report.frames_sampled += 1
                yield Frame(source, index, float(timestamp), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        capture.release()
    if report.frames_read == 0:
        raise MediaError("decode", "video has no decodable frames (empty or corrupt stream)")
    reached_limit = options.max_frames is not None and report.frames_sampled >= options.max_frames
    reached_limit = reached_limit or stop_frame is not None
    decoded_to = start_frame + report.frames_read
    if not reached_limit and info.frame_count > 0 and decoded_to < 0.95 * info.frame_count - 1:
        report.truncated_message = (
            f"video ended early: decoded {decoded_to} of {info.frame_count} frames the container announces"
        )


def _seek(capture: cv2.VideoCapture, frame: int, source: MediaSource) -> None:
    """Put the reader on `frame` (FFmpeg seeks to the keyframe before it and decodes forward)."""
    if not capture.set(cv2.CAP_PROP_POS_FRAMES, frame) or int(capture.get(cv2.CAP_PROP_POS_FRAMES)) != frame:
        raise MediaError("decode", f"cannot seek to frame {frame} of {source.relative}")


_END = object()


def background_frames(frames: Iterator[Frame], buffer: int = defaults.DECODE_QUEUE) -> Iterator[Frame]:
    """Run a frame iterator in a thread so decoding overlaps detection and classification.

    Exceptions raised by the decoder are re-raised in the consumer, in order.
    """
    channel: queue.Queue = queue.Queue(maxsize=buffer)
    stop = threading.Event()

    def produce() -> None:
        try:
            for frame in frames:
                while not stop.is_set():
                    try:
                        channel.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            channel.put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            channel.put(error)

    thread = threading.Thread(target=produce, name="fer-batch-decoder", daemon=True)
    thread.start()
    try:
        while True:
            item = channel.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                channel.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
