"""The README cannot drift from the code: its Python blocks run, its `fer` commands parse.

Python blocks run in order in one namespace, in a folder that holds `videos/` (the first
frames of the shared crowd clip, 640x360) and `photos/` (the shared group photo), on the CPU.
Every `fer ...` line of a shell block, in the README, the model card and docs/, is parsed by the
real CLI (unknown flags, bad values and missing required options fail); the commands themselves
are run by the other tests.
The README, the model card and docs/ must not point at files that are gone: their local links
open and the repository files they name exist.
"""

from __future__ import annotations

import re
import shlex
import shutil

import cv2
import pytest
import typer
from typer.exceptions import TyperException

from fer_batch.cli import app
from tests.conftest import REPO

BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


# The documents a user reads: the README, the model card and docs/.
DOCUMENTS = ("README.md", "fer_batch/weights/README.md", *(f"docs/{path.name}" for path in sorted((REPO / "docs").glob("*.md"))))


def _blocks(language: set[str], documents: tuple[str, ...] = ("README.md",)) -> list[str]:
    return [body for document in documents for fence, body in BLOCK.findall((REPO / document).read_text())
            if fence in language]


@pytest.fixture
def readme_folder(tmp_path, media_dir, monkeypatch):
    (tmp_path / "videos").mkdir()
    (tmp_path / "photos").mkdir()
    shutil.copy(media_dir / "group-six-faces.jpg", tmp_path / "photos" / "group.jpg")
    capture = cv2.VideoCapture(str(media_dir / "walking-crowd-1080p.mp4"))
    writer = cv2.VideoWriter(str(tmp_path / "videos" / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 360))
    for _ in range(10):
        ok, frame = capture.read()
        assert ok
        writer.write(cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA))
    writer.release()
    capture.release()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the examples must run on a CPU-only machine
    return tmp_path


def test_python_blocks_run(readme_folder, capsys):
    blocks = _blocks({"python"})
    assert blocks, "the README has no Python example"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    printed = capsys.readouterr().out
    assert "clip.mp4" in printed and "group.jpg" in printed
    assert (readme_folder / "results.parquet").is_file() and len(namespace["run"].faces) > 0


def _fer_commands() -> list[list[str]]:
    """Every `fer` line of the documents' shell blocks (and unmarked ones, the model card's), with
    its continuation lines; `[--flag]`, an optional flag in the documents' notation, as the flag."""
    commands = []
    for block in _blocks({"bash", "sh", ""}, DOCUMENTS):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("fer "):
                commands.append(shlex.split(re.sub(r"\[(--[\w-]+)\]", r"\1", line))[1:])
    return commands


@pytest.mark.parametrize("arguments", _fer_commands(), ids=lambda arguments: " ".join(arguments)[:60])
def test_fer_commands_parse(arguments):
    group = typer.main.get_command(app)
    command = group.commands.get(arguments[0])
    assert command is not None, f"`fer {arguments[0]}` is not a command"
    try:
        command.make_context(arguments[0], arguments[1:])
    except TyperException as error:
        pytest.fail(f"`fer {' '.join(arguments)}`: {error}")


# What the documents point at: a local link must open, and a file the text names in backquotes
# (a script to run, a module to read) must exist in the repository.
LOCAL_LINK = re.compile(r"\]\((?!https?://)([^)#\s]+)(?:#[^)]*)?\)")
NAMED_FILE = re.compile(r"`((?:benchmarks|fer_batch|tests|examples|docs|results)/[\w./-]*\.(?:py|sh|md|pt|html|json|csv))`")


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_files_a_document_links_or_names_exist(document):
    path = REPO / document
    text = path.read_text()
    broken = [target for target in LOCAL_LINK.findall(text) if not (path.parent / target).exists()]
    missing = sorted({name for name in NAMED_FILE.findall(text) if not (REPO / name).exists()})
    assert not broken, f"{document}: links that do not open: {broken}"
    assert not missing, f"{document}: files named that the repository lacks: {missing}"
