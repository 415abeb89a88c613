"""The HTML report, annotated renders and `fer report`, on a small real run with one bad file."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fer_batch.cli import app

runner = CliRunner()
VIDEO_FRAMES = 8


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.text: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if "id" in attributes:
            self.ids.add(attributes["id"])
        if tag == "img":
            self.images.append(attributes.get("src", ""))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory, media_dir, shipped_weights):
    folder = tmp_path_factory.mktemp("inputs")
    shutil.copy(media_dir / "group-six-faces.jpg", folder / "group.jpg")
    shutil.copy(media_dir / "walking-crowd-1080p.mp4", folder / "crowd.mp4")
    (folder / "broken.png").write_text("not a png")
    out = tmp_path_factory.mktemp("outputs")
    result = runner.invoke(
        app,
        ["annotate", str(folder), "--out", str(out / "r.parquet"), "--max-frames", str(VIDEO_FRAMES), "--every-nth", "2",
         "--report", str(out / "report.html"), "--render", str(out / "render"), "--quiet", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    return folder, out


def test_report_is_html_naming_every_source_track_and_error(reported_run):
    _, out = reported_run
    page = (out / "report.html").read_text()
    parser = _Collector()
    parser.feed(page)
    text = " ".join(parser.text)
    sources = pd.read_parquet(out / "r.summary.parquet")
    tracks = pd.read_parquet(out / "r.tracks.parquet")
    errors = pd.read_parquet(out / "r.errors.parquet")
    assert set(sources.source) == {"broken.png", "crowd.mp4", "group.jpg"}
    for source in sources.source:
        assert source in text
    video_tracks = tracks[tracks.source == "crowd.mp4"]
    assert len(video_tracks) >= 4
    for track_id in video_tracks.track_id:
        assert f"track-crowd.mp4-{track_id}" in parser.ids
    assert errors.source.tolist() == ["broken.png"] and errors.message.iloc[0] in text
    # Self-contained: every image is inline, nothing is fetched from a network or a file.
    assert parser.images and all(src.startswith("data:image/") for src in parser.images)
    assert "http://" not in page and "https://" not in page


def test_rendered_copies_match_their_sources(reported_run):
    """Videos play in browsers: H.264, yuv420p, index first (faststart), same fps and frame count."""
    import av

    folder, out = reported_run
    source, rendered = cv2.VideoCapture(str(folder / "crowd.mp4")), cv2.VideoCapture(str(out / "render" / "crowd.mp4"))
    assert rendered.isOpened()
    assert rendered.get(cv2.CAP_PROP_FPS) == pytest.approx(source.get(cv2.CAP_PROP_FPS))
    with av.open(str(out / "render" / "crowd.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert not container.streams.audio
        frames = sum(1 for _ in container.decode(stream))
    assert frames == int(source.get(cv2.CAP_PROP_FRAME_COUNT)) == 105
    head = (out / "render" / "crowd.mp4").read_bytes()
    assert head.index(b"moov") < head.index(b"mdat")  # faststart: playable before fully downloaded
    picture = cv2.imread(str(out / "render" / "group.jpg"))
    original = cv2.imread(str(folder / "group.jpg"))
    assert picture.shape == original.shape
    assert np.abs(picture.astype(int) - original.astype(int)).mean() > 0.5  # boxes and labels were drawn
    assert not (out / "render" / "broken.jpg").exists()


def test_fer_report_rebuilds_the_report_from_an_existing_output(reported_run, tmp_path):
    _, out = reported_run
    result = runner.invoke(app, ["report", str(out / "r.parquet"), "--out", str(tmp_path / "again.html"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "crowd.mp4" in (tmp_path / "again.html").read_text()
    missing = runner.invoke(app, ["report", str(tmp_path / "nothing.parquet"), "--out", str(tmp_path / "x.html")])
    assert missing.exit_code == 2 and "nothing.parquet" in missing.output


def _headless(browser: str, *arguments: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        return subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000", *arguments],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_report_renders_in_headless_chromium(reported_run, tmp_path, chromium):
    """In a real browser: every video track is a visible row, and the annotated H.264 video beside
    the timelines loads (the page records its duration once the browser has read it)."""
    browser = chromium
    _, out = reported_run
    page = (out / "report.html").resolve().as_uri()
    tracks = pd.read_parquet(out / "r.tracks.parquet")
    dom = _headless(browser, "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'data-track-rows="{int((tracks.source == "crowd.mp4").sum())}"' in dom.stdout
    seconds = re.search(r'data-video-seconds="([0-9.]+)"', dom.stdout)
    assert seconds is not None, "the browser did not load the rendered video"
    assert float(seconds.group(1)) == pytest.approx(105 / 25, abs=0.05)
    assert "<video" in dom.stdout and 'src="render/crowd.mp4"' in dom.stdout
    faces = pd.read_parquet(out / "r.parquet")
    per_frame = faces[faces.source == "crowd.mp4"].groupby("frame_index").size()
    assert f"faces per frame (up to {per_frame.max()})" in dom.stdout
    for width in (1400, 800):
        screenshot = tmp_path / f"report-{width}.png"
        shot = _headless(browser, f"--window-size={width},1600", f"--screenshot={screenshot}", page)
        assert shot.returncode == 0, shot.stderr[-2000:]
        image = cv2.imread(str(screenshot))
        assert image is not None and image.shape[:2] == (1600, width)
        assert image.std() > 20  # a page with content, not a blank or error screen


def test_h264_writer_pads_odd_sizes_and_keeps_every_frame(tmp_path):
    """yuv420p needs even sides: a 5x3 video becomes 6x4 with the picture in its top-left corner."""
    import av

    from fer_batch.render import H264Writer

    writer = H264Writer(tmp_path / "odd.mp4", 12.5, (5, 3))
    for value in range(0, 250, 10):
        writer.write(np.full((3, 5, 3), value, np.uint8))
    writer.close()
    with av.open(str(tmp_path / "odd.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (6, 4)
        assert float(stream.average_rate) == pytest.approx(12.5)
        pictures = [frame.to_ndarray(format="gray") for frame in container.decode(stream)]
    assert len(pictures) == 25
    assert [int(round(p[:3, :5].mean())) for p in pictures[::8]] == pytest.approx([0, 80, 160, 240], abs=6)


def test_overview_shows_each_sources_emotion_shares_and_faces_per_frame(reported_run):
    """The overview's bars carry the face table's own counts: all sources first, then each source."""
    _, out = reported_run
    page = (out / "report.html").read_text()
    overview = page[page.index("id='overview'"):page.index("id='run'")]
    faces = pd.read_parquet(out / "r.parquet")
    rows = re.findall(r"<div class='orow'><span class='olabel' title='([^']*)'>.*?</div>(?=<div class='orow'>|</div>)", overview)
    assert rows[:3] == ["all sources", "crowd.mp4", "group.jpg"]  # most faces first
    for label, group in [("all sources", faces), ("group.jpg", faces[faces.source == "group.jpg"])]:
        row = overview[overview.index(f"title='{label}'"):]
        row = row[:row.index("</div><span class='ocount'>")]
        shown = {name: int(count) for name, count in re.findall(r"title='(\w+) [0-9.]+% \((\d+)\)'", row)}
        assert shown == group.emotion.value_counts().to_dict()
    per_frame = faces[faces.source == "crowd.mp4"].groupby("frame_index").size()
    assert f"up to {per_frame.max()} over" in overview
    assert overview.count("<svg class='count'") == 1  # one video


def test_a_run_without_faces_says_so_in_every_section(tmp_path, annotator):
    from fer_batch.api import annotate_to_file, write_report

    cv2.imwrite(str(tmp_path / "wall.png"), np.full((120, 160, 3), 128, np.uint8))
    annotate_to_file([tmp_path / "wall.png"], tmp_path / "out.parquet", annotator=annotator)
    outputs = write_report(tmp_path / "out.parquet", report=tmp_path / "report.html", render=tmp_path / "render")
    page = outputs.report.read_text()
    assert "No faces were found in this run." in page
    assert "No videos in this run." in page and "No faces in images." in page
    assert "no face detected in image" in page  # listed among the errors, as in the errors table
    assert "class='orow'" not in page
    assert [path.name for path in outputs.rendered] == ["wall.jpg"] and not outputs.render_failures
