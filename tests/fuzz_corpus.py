"""A hostile-input corpus, generated at test time (nothing here is committed media).

`build_corpus(folder)` writes well over 150 files: valid media in awkward forms, media cut
short or bit-flipped at seeded random places, empty files, text and random bytes under
media names, a decompression bomb, tiny and very large images, names with every kind of
character, a directory named like a video, links that dangle or loop, and a FIFO. It
returns the names (relative to `folder`) that a run must account for, each as a source
with rows or errors, or as a skipped input.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IMAGE_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "tif": "TIFF", "gif": "GIF"}
VIDEO_FORMATS = {"mp4": "mp4v", "mov": "mp4v", "avi": "MJPG", "mkv": "mp4v", "webm": "VP80"}
ALL_EXTENSIONS = [*IMAGE_FORMATS, "bmp", *VIDEO_FORMATS]


def _face_image(media_dir: Path, size: int = 320) -> Image.Image:
    with Image.open(media_dir / "group-six-faces.jpg") as photo:
        return photo.convert("RGB").resize((size, size * 630 // 1200))


def _encode(image: Image.Image, extension: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=IMAGE_FORMATS.get(extension, extension.upper()))
    return buffer.getvalue()


def _write_webm(path: Path, frames: int, size: tuple[int, int], fps: int = 10) -> bool:
    """VP8 in WebM through PyAV (OpenCV's FFmpeg has no WebM writer)."""
    import av

    with av.open(str(path), "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for index in range(frames):
            picture = np.full((size[1], size[0], 3), (index * 37) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.is_file() and path.stat().st_size > 0


def _write_video(path: Path, frames: int, size: tuple[int, int], fourcc: str, fps: float = 10.0) -> bool:
    if fourcc == "VP80":
        return _write_webm(path, frames, size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        return False
    for index in range(frames):
        picture = np.full((size[1], size[0], 3), (index * 37) % 256, np.uint8)
        cv2.putText(picture, str(index), (2, size[1] - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        writer.write(picture)
    writer.release()
    return path.is_file() and path.stat().st_size > 0


def _bomb_png(width: int, height: int) -> bytes:
    """A valid-looking PNG header declaring width x height pixels, with a tiny body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _audio_only_mp4(path: Path) -> bool:
    """A real MP4 holding one AAC audio track and no video."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), np.float32)
        for index in range(20):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.is_file()


def rotated_mp4(path: Path, displayed_rgb: list[np.ndarray]) -> Path:
    """An H.264 MP4 whose frames are stored turned a quarter counter-clockwise, with a track
    display matrix that turns them back, as phones record portrait video: a player (and
    OpenCV) shows `displayed_rgb` upright."""
    import av

    stored = [np.ascontiguousarray(cv2.rotate(rgb, cv2.ROTATE_90_COUNTERCLOCKWISE)) for rgb in displayed_rgb]
    height, width = stored[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for rgb in stored:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd")  # the track header's matrix: rotate 90 degrees on display
    version = data[box + 4]
    matrix = box + 8 + (8 + 8 + 4 + 4 + 8 if version == 1 else 4 + 4 + 4 + 4 + 4) + 8 + 8
    struct.pack_into(">9i", data, matrix, 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return path


def _variable_rate_mp4(path: Path) -> bool:
    """H.264 frames at irregular times (10, 30 and 70 ms apart)."""
    import av
    from fractions import Fraction

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for index in range(24):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index * 10, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            pts += (10, 30, 70)[index % 3]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.is_file()


def build_corpus(folder: Path, media_dir: Path, seed: int = 20261126) -> set[str]:
    """Write the corpus into `folder`; return the relative names a run must account for."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    expected: set[str] = set()

    def put(name: str, data: bytes) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected.add(name)

    face = _face_image(media_dir)
    valid = {extension: _encode(face, extension) for extension in IMAGE_FORMATS}
    videos = {}
    for extension, fourcc in VIDEO_FORMATS.items():
        path = folder / "valid" / f"clip.{extension}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if _write_video(path, 12, (96, 64), fourcc):
            videos[extension] = path.read_bytes()
            expected.add(f"valid/clip.{extension}")
        else:
            path.unlink(missing_ok=True)
    for extension, data in valid.items():
        put(f"valid/photo.{extension}", data)

    # Cut short at random offsets, and bit flips in header and body.
    for extension, data in [*valid.items(), *videos.items()]:
        for number in range(5):
            cut = rng.randrange(1, max(2, len(data) - 1))
            put(f"truncated/{extension}-{number}.{extension}", data[:cut])
        header, middle = (0, min(64, len(data))), (len(data) // 3, len(data))
        for number, (low, high) in enumerate((header, middle, middle)):
            flipped = bytearray(data)
            for _ in range(8):
                position = rng.randrange(low, high)
                flipped[position] ^= 1 << rng.randrange(8)
            put(f"bitflip/{extension}-{number}.{extension}", bytes(flipped))

    # Empty files, and files that are not media at all under media names.
    for extension in ALL_EXTENSIONS:
        put(f"empty/zero.{extension}", b"")
    for number, extension in enumerate(("jpg", "png", "webp", "gif", "mp4", "mov", "avi", "mkv")):
        put(f"impostors/text-{number}.{extension}", b"just some notes, not a picture\n" * 10)
        put(f"impostors/page-{number}.{extension}", b"<!doctype html><html><body>404 not found</body></html>")
        put(f"impostors/noise-{number}.{extension}", bytes(rng.randrange(256) for _ in range(4096)))

    # Sizes: a decompression bomb, tiny images, a very large legitimate one, odd video sizes.
    put("sizes/bomb.png", _bomb_png(50_000, 50_000))
    for width, height in ((1, 1), (5, 3), (11, 11)):
        put(f"sizes/tiny-{width}x{height}.png", _encode(Image.new("RGB", (width, height), (128, 90, 60)), "png"))
    large = Image.new("L", (12_000, 8_000), 90)
    large.paste(face.convert("L").resize((3000, 1575)), (4000, 3000))
    put("sizes/large-12000x8000.jpg", _encode(large, "jpg"))
    for width, height in ((33, 17), (97, 61)):
        path = folder / "sizes" / f"odd-{width}x{height}.avi"
        if _write_video(path, 6, (width, height), "MJPG"):
            expected.add(f"sizes/odd-{width}x{height}.avi")

    # Pixel formats and containers with several frames (the first is used).
    put("formats/cmyk.jpg", _encode(face.convert("CMYK"), "jpg"))
    sixteen = io.BytesIO()
    Image.fromarray((np.asarray(face.convert("L"), np.uint16) * 257)).save(sixteen, format="PNG")
    put("formats/gray16.png", sixteen.getvalue())
    put("formats/palette.png", _encode(face.convert("P"), "png"))
    put("formats/gray-alpha.png", _encode(face.convert("LA"), "png"))
    animated = io.BytesIO()
    face.save(animated, format="GIF", save_all=True, append_images=[face.rotate(90), face.rotate(180)], duration=100)
    put("formats/animated.gif", animated.getvalue())
    pages = io.BytesIO()
    face.save(pages, format="TIFF", save_all=True, append_images=[face.convert("L")])
    put("formats/pages.tiff", pages.getvalue())
    put("formats/UPPER.JPG", valid["jpg"])
    put("formats/Mixed.Png", valid["png"])

    # Videos without pictures, and with irregular timing.
    path = folder / "video" / "zero-frames.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    if _write_video(path, 0, (64, 48), "mp4v"):
        expected.add("video/zero-frames.mp4")
    else:  # OpenCV writes nothing for zero frames: keep a header-only file from a one-frame clip instead
        path.unlink(missing_ok=True)
        put("video/zero-frames.mp4", videos.get("mp4", b"")[:48])
    if _audio_only_mp4(folder / "video" / "audio-only.mp4"):
        expected.add("video/audio-only.mp4")
    if _variable_rate_mp4(folder / "video" / "variable-rate.mp4"):
        expected.add("video/variable-rate.mp4")
    upright = np.asarray(_face_image(media_dir, 480))
    rotated_mp4(folder / "video" / "portrait-rotated.mp4", [upright] * 3)
    expected.add("video/portrait-rotated.mp4")

    # Names with spaces, tabs, newlines, quotes, commas and non-ASCII.
    for name in ("with space.jpg", "tab\there.jpg", "new\nline.jpg", 'quote"double.jpg', "quote'single.jpg",
                 "comma,name.jpg", "ünïcödé-日本語.jpg", "emoji-😀.png"):
        put(f"names/{name}", valid["png"] if name.endswith(".png") else valid["jpg"])

    # A folder named like a video is walked; links that dangle or loop; a FIFO; a phone format.
    put("looks-like.mp4/inside.jpg", valid["jpg"])
    (folder / "links").mkdir()
    os.symlink(folder / "nowhere.jpg", folder / "links" / "dangling.jpg")
    expected.add("links/dangling.jpg")
    os.symlink(folder / "links", folder / "links" / "loop")  # a directory link back to itself
    os.symlink(folder / "valid" / "photo.jpg", folder / "links" / "good-link.jpg")
    expected.add("links/good-link.jpg")
    os.mkfifo(folder / "links" / "pipe.mp4")
    expected.add("links/pipe.mp4")
    put("phone/IMG_0001.HEIC", b"\x00\x00\x00\x18ftypheic" + bytes(64))
    shutil.copy(media_dir / "group-six-faces.jpg", folder / "group.jpg")
    expected.add("group.jpg")
    return expected
