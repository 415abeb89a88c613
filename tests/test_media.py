"""Sources, image decoding in every mode, and streamed video decoding with sampling."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_batch.options import RunOptions
from fer_batch.media import (
    InputPathError,
    MediaError,
    MediaSource,
    VideoReadReport,
    background_frames,
    discover_sources,
    iter_video_frames,
    read_image,
)


def write_video(path: Path, frames: int, fps: float = 10.0, size=(64, 48), fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    for index in range(frames):
        writer.write(np.full((size[1], size[0], 3), (index * 7) % 256, np.uint8))
    writer.release()
    return path


def test_discovery_is_recursive_sorted_case_insensitive_and_filtered(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ["b/z.JPG", "a/deep/x.png", "a/y.MP4", "notes.txt", "a/.hidden.jpg", "b/skip_me.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    sources, unsupported = discover_sources([tmp_path], exclude=("skip_*",))
    assert [s.relative for s in sources] == ["a/deep/x.png", "a/y.MP4", "b/z.JPG"]
    assert [s.media_type for s in sources] == ["image", "video", "image"]
    assert unsupported == []  # unknown files inside folders are simply not media
    only_videos, _ = discover_sources([tmp_path], glob=("*.mp4",))
    assert [s.relative for s in only_videos] == ["a/y.MP4"]
    by_path, _ = discover_sources([tmp_path], glob=("a/deep/*",))
    assert [s.relative for s in by_path] == ["a/deep/x.png"]


def test_fifos_and_broken_links_named_like_media_are_skipped_with_a_reason_without_opening_them(tmp_path):
    import os

    (tmp_path / "photo.jpg").write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe.mp4")  # opening it would block until something writes to it
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    sources, skipped = discover_sources([tmp_path])
    assert [source.relative for source in sources] == ["photo.jpg"]
    assert skipped == [("gone.jpg", "broken symbolic link; skipped"),
                       ("pipe.mp4", "not a regular file but a FIFO (named pipe); skipped")]
    named, skipped = discover_sources([tmp_path / "pipe.mp4"])
    assert named == [] and skipped == [("pipe.mp4", "not a regular file but a FIFO (named pipe); skipped")]


def test_missing_path_is_an_error_before_any_work(tmp_path):
    with pytest.raises(InputPathError, match="does-not-exist"):
        discover_sources([tmp_path, tmp_path / "does-not-exist"])


def test_a_named_file_of_unknown_type_is_reported(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    sources, unsupported = discover_sources([notes])
    assert sources == [] and unsupported == [("notes.txt", "unsupported file type '.txt'")]


def test_same_relative_name_under_two_roots_stays_unique(tmp_path):
    for root in ("one", "two"):
        (tmp_path / root).mkdir()
        (tmp_path / root / "face.jpg").write_bytes(b"x")
    sources, _ = discover_sources([tmp_path / "one", tmp_path / "two"])
    assert len({s.relative for s in sources}) == 2


def test_exif_orientation_is_applied(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :20] = 255  # left half white
    image = Image.fromarray(wide)
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    upright = read_image(path)
    assert upright.shape == (40, 20, 3)
    assert upright[:18, :, 0].mean() > 200 and upright[22:, :, 0].mean() < 50


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "I;16", "CMYK"])
def test_every_image_mode_becomes_rgb8(tmp_path, mode):
    gradient = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (16, 1))
    if mode == "I;16":
        image = Image.fromarray(gradient.astype(np.uint16) * 257)
        assert image.mode.startswith("I;16")
        path = tmp_path / "deep.png"
    elif mode == "RGBA":
        rgba = np.dstack([gradient] * 3 + [np.full_like(gradient, 255)])
        rgba[:, :4, 3] = 0  # transparent strip is composited on white
        image = Image.fromarray(rgba, mode="RGBA")
        path = tmp_path / "alpha.png"
    else:
        image = Image.fromarray(gradient, mode="L").convert(mode)
        path = tmp_path / ("cmyk.tif" if mode == "CMYK" else f"{mode}.png")
    image.save(path)
    rgb = read_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 32, 3)
    if mode == "RGBA":
        assert rgb[:, :4].min() == 255
    else:
        assert rgb[:, -1].mean() > 200 and rgb[:, 6].mean() < 80  # the gradient survives


def test_gif_first_frame(tmp_path):
    frames = [Image.new("L", (8, 8), value) for value in (10, 240)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert read_image(path).mean() < 30


@pytest.mark.parametrize("content, stage", [(b"", "read"), (b"plain text, not an image", "decode")])
def test_bad_images_raise_media_errors(tmp_path, content, stage):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(MediaError) as error:
        read_image(path)
    assert error.value.stage == stage


def _frames(path: Path, options: RunOptions):
    report = VideoReadReport()
    frames = list(background_frames(iter_video_frames(MediaSource(path, path.name, "video"), options, report)))
    return frames, report


def test_video_every_nth_frame_with_container_timestamps(tmp_path):
    path = write_video(tmp_path / "clip.mp4", frames=30, fps=10.0)
    frames, report = _frames(path, RunOptions(every_nth=3))
    assert report.frames_read == 30 and report.truncated_message is None
    assert [frame.index for frame in frames] == list(range(0, 30, 3))
    assert [round(frame.timestamp_s, 3) for frame in frames] == [round(i / 10.0, 3) for i in range(0, 30, 3)]
    assert frames[0].rgb.shape == (48, 64, 3)


def test_video_target_fps_and_max_frames(tmp_path):
    path = write_video(tmp_path / "clip.mp4", frames=40, fps=20.0)
    frames, _ = _frames(path, RunOptions(fps=5.0))
    assert len(frames) == 10
    assert np.allclose(np.diff([frame.timestamp_s for frame in frames]), 0.2, atol=1e-3)
    limited, report = _frames(path, RunOptions(max_frames=4))
    assert [frame.index for frame in limited] == [0, 1, 2, 3] and report.truncated_message is None


def test_truncated_video_keeps_decoded_frames_and_reports(tmp_path):
    path = write_video(tmp_path / "cut.avi", frames=30, fps=10.0, fourcc="MJPG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    frames, report = _frames(path, RunOptions())
    assert 0 < len(frames) < 30
    assert "ended early" in report.truncated_message


def test_unreadable_video_raises(tmp_path):
    path = tmp_path / "fake.mp4"
    path.write_text("not a video")
    with pytest.raises(MediaError, match="not a readable video"):
        _frames(path, RunOptions())
