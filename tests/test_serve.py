"""`fer serve`: the real application with the real models, through HTTP and in a real browser."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, strategies as st

fastapi = pytest.importorskip("fastapi", reason="fer serve needs the [serve] extra")
from fastapi.testclient import TestClient  # noqa: E402

from fer_batch.serve import ACCEPTED_SUFFIXES, create_app, safe_upload_name  # noqa: E402


def _wait_done(client: TestClient, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in {"done", "failed"}:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")


@pytest.fixture(scope="module")
def served(tmp_path_factory, annotator):
    """The application on the session's Annotator, with a 2 MB upload cap."""
    work = tmp_path_factory.mktemp("serve")
    app = create_app(work, make_annotator=lambda: annotator, max_upload_mb=2)
    with TestClient(app) as client:
        yield client, work


def test_queued_uploads_run_in_order_and_give_downloadable_results(served, media_dir):
    client, work = served
    group = (media_dir / "group-six-faces.jpg").read_bytes()
    portrait = (media_dir / "portrait-kate_siegel.jpg").read_bytes()
    first = client.post("/api/jobs", files=[("files", ("group six.jpg", group, "image/jpeg"))])
    second = client.post("/api/jobs", files=[("files", ("../../portrait.JPG", portrait, "image/jpeg")),
                                              ("files", ("portrait.jpg", portrait, "image/jpeg"))])
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert second.json()["files"] == ["portrait.JPG", "portrait-1.jpg"]  # no directories, no clobbering
    assert second.json()["state"] == "queued"
    done_first = _wait_done(client, first.json()["id"])
    done_second = _wait_done(client, second.json()["id"])
    assert done_first["state"] == done_second["state"] == "done", (done_first["error"], done_second["error"])
    assert done_first["finished"] <= done_second["finished"]  # one worker, in the order they came

    result = done_first["result"]
    assert result["faces"] == 6 and len(result["rows"]) == 6 and {row["source"] for row in result["rows"]} == {"group six.jpg"}
    assert done_second["result"]["faces"] == 2 and done_second["result"]["sources_ok"] == 2
    parquet = client.get(result["parquet"])
    csv = client.get(result["csv"])
    assert parquet.status_code == csv.status_code == 200
    assert "attachment" in parquet.headers["content-disposition"]
    from_parquet = pd.read_parquet(io.BytesIO(parquet.content))
    from_csv = pd.read_csv(io.BytesIO(csv.content))
    assert len(from_parquet) == len(from_csv) == 6
    assert sorted(from_parquet.emotion) == sorted(row["emotion"] for row in result["rows"])
    report = client.get(result["report"])
    assert report.status_code == 200 and "group six.jpg" in report.text
    annotated = client.get(result["annotated"][0])
    assert annotated.status_code == 200 and annotated.headers["content-type"] == "image/jpeg"
    listed = client.get("/api/jobs").json()
    assert [job["id"] for job in listed[:2]] == [second.json()["id"], first.json()["id"]]  # newest first


def test_refuses_other_types_and_large_uploads_without_leaving_files(served, media_dir):
    client, work = served
    before = set((work / "jobs").iterdir())
    script = client.post("/api/jobs", files=[("files", ("photo.jpg", b"\xff\xd8", "image/jpeg")),
                                             ("files", ("run.sh", b"rm -rf /", "text/x-sh"))])
    assert script.status_code == 415 and "run.sh" in script.json()["detail"]
    big = (media_dir / "portrait-shea_whigham.jpg").read_bytes()  # 2.75 MB, over the 2 MB cap
    large = client.post("/api/jobs", files=[("files", ("big.jpg", big, "image/jpeg"))])
    assert large.status_code == 413 and "2 MB" in large.json()["detail"]

    def chunks():  # no Content-Length: the cap is counted as the body streams
        yield b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n\r\n"
        for _ in range(40):
            yield b"\0" * 65536

    streamed = client.post("/api/jobs", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert streamed.status_code == 413
    empty = client.post("/api/jobs", files=[])
    assert empty.status_code in {400, 422}
    assert set((work / "jobs").iterdir()) == before


def test_never_serves_files_outside_a_job_folder(served, media_dir, tmp_path):
    client, work = served
    job = client.post("/api/jobs", files=[("files", ("p.jpg", (media_dir / "portrait-paul_rudd.jpg").read_bytes(), "image/jpeg"))]).json()
    done = _wait_done(client, job["id"])
    secret = work / "secret.txt"
    secret.write_text("not for the web")
    outside = tmp_path / "outside.txt"
    outside.write_text("not for the web either")
    (work / "jobs" / job["id"] / "link.txt").symlink_to(outside)
    assert client.get(f"/jobs/{job['id']}/files/input/p.jpg").status_code == 200  # inside: served
    for attempt in [
        f"/jobs/{job['id']}/files/..%2F..%2Fsecret.txt",
        f"/jobs/{job['id']}/files/%2E%2E/%2E%2E/secret.txt",
        f"/jobs/{job['id']}/files/input/..%2F..%2F..%2Fsecret.txt",
        f"/jobs/{job['id']}/files/%2F{str(secret).lstrip('/').replace('/', '%2F')}",
        f"/jobs/{job['id']}/files/link.txt",  # a symlink out of the folder
        "/jobs/..%2F..%2Fsecret.txt/files/x",
        "/jobs/000000000000/files/results.parquet",  # a job that does not exist
        f"/jobs/{job['id']}/files/",
    ]:
        response = client.get(attempt)
        assert response.status_code == 404, attempt
        assert "not for the web" not in response.text
    assert done["state"] == "done"


def test_too_many_waiting_jobs_are_refused_until_one_finishes(tmp_path, annotator, media_dir):
    release = threading.Event()

    def slow_annotator():  # holds the first job at model loading until the test lets it go
        release.wait(60)
        return annotator

    app = create_app(tmp_path, make_annotator=slow_annotator, max_waiting=1)
    photo = ("files", ("p.jpg", (media_dir / "portrait-paul_rudd.jpg").read_bytes(), "image/jpeg"))
    with TestClient(app) as client:
        first = client.post("/api/jobs", files=[photo])
        refused = client.post("/api/jobs", files=[photo])
        assert first.status_code == 201 and refused.status_code == 503
        release.set()
        assert _wait_done(client, first.json()["id"])["state"] == "done"
        assert client.post("/api/jobs", files=[photo]).status_code == 201


@given(st.text(max_size=300))
def test_upload_names_stay_inside_the_input_folder(name):
    safe = safe_upload_name(name)
    root = Path("/srv/work/jobs/abc/input")
    assert safe and "/" not in safe and "\\" not in safe and not safe.startswith(".")
    assert (root / safe).resolve().parent == root
    assert len(safe) <= 120


def test_accepted_types_are_the_ones_the_pipeline_reads():
    from fer_batch.media import media_type_of

    assert all(media_type_of(Path("x" + suffix)) is not None for suffix in ACCEPTED_SUFFIXES)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_upload_the_group_photo_in_a_real_browser_and_see_six_faces(tmp_path, media_dir, chromium):
    """End to end: `fer serve` as a user starts it, Chromium driven by Playwright uploads the photo."""
    playwright = pytest.importorskip("playwright.sync_api")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "fer_batch.cli", "serve", "--port", str(port), "--work-dir", str(tmp_path / "work"),
         "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            deadline = time.monotonic() + 60
            while True:  # the server imports torch before it listens
                try:
                    page.goto(f"http://127.0.0.1:{port}/")
                    break
                except playwright.Error:
                    assert server.poll() is None and time.monotonic() < deadline, server.stdout and server.stdout.read()
                    time.sleep(0.5)
            page.set_input_files("#files", str(media_dir / "group-six-faces.jpg"))
            page.click("#send")
            page.wait_for_selector(".job[data-state=done], .job[data-state=failed]", timeout=180_000)
            assert page.inner_text(".job .state") == "done", page.inner_text(".job")
            assert page.inner_text(".job .summary").startswith("6 faces in 1 source")
            assert page.locator(".face-row").count() == 6
            emotions = page.locator(".face-row td:nth-child(5)").all_inner_texts()
            assert "happy" in emotions  # the group smiles (tests/test_correctness.py)
            image_width = page.eval_on_selector(".media img", "img => img.complete ? img.naturalWidth : 0")
            assert image_width == 1200  # the annotated copy loaded, at the photo's size
            with page.expect_popup() as popup:
                page.click("text=Open the report")
            report = popup.value
            report.wait_for_load_state()
            assert report.title() == "fer-batch report" and report.locator(".face").count() == 6
            page.set_input_files("#files", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"})
            page.click("#send")
            page.wait_for_function("document.getElementById('message').textContent.length > 0")
            assert "notes.txt" in page.inner_text("#message")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
