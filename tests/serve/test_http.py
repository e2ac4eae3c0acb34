"""A real `serve` subprocess on a generated video: health, status, classify (== predict), 4xx for bad bodies,
metrics, SSE, and a SIGTERM that exits 0 with a complete JSONL. Tests run in file order on one process;
the SIGTERM test is last."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO, WASTE_SAMPLE
from tests.serve.conftest import ServeProcess, read_sse, wait_for
from waste_edge.runtime.demo import write_demo_video

pytestmark = pytest.mark.usefixtures("serve_extra")
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
    tmp = tmp_path_factory.mktemp("serve")
    video = write_demo_video(tmp / "demo.mp4", seconds=4, fps=10, size=(320, 240))
    proc = ServeProcess(["--device", str(video), "--loop", "--realtime", "--jsonl", str(tmp / "events.jsonl"),
                         "--max-body-mb", "1", "--max-pixels", str(MAX_PIXELS), "--stream-fps", "5"], tmp)
    proc.tmp = tmp
    yield proc
    proc.terminate()


@pytest.fixture(scope="module")
def client(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def test_healthz_turns_200_and_status_shows_frames_advancing(server, client):
    wait_for(lambda: client.get("/healthz").status_code == 200, 120, "/healthz 200")
    assert client.get("/healthz").json() == {"status": "ok"}
    first = client.get("/api/v1/status").json()
    cam = first["cameras"][0]
    assert cam["id"] == "cam0" and cam["state"] == "connected" and cam["kind"] == "video"
    assert len(first["model"]["sha256"]) == 64 and first["model"]["classes"] == ["B", "N"]
    n0 = cam["counters"]["frames"]
    wait_for(lambda: client.get("/api/v1/status").json()["cameras"][0]["counters"]["frames"] >= n0 + 5, 60, "5 more frames")
    cam = client.get("/api/v1/status").json()["cameras"][0]
    assert cam["decision"]["label"] in ("B", "N", "uncertain")
    assert set(cam["last_hour"]) == {"B", "N", "uncertain"} and sum(cam["last_hour"].values()) == cam["counters"]["frames"]
    assert cam["fps"] > 0 and cam["latency_ms"]["infer"]["p50"] > 0


def _predict_row(photo, tmp):
    out = tmp / "predict.csv"
    subprocess.run([sys.executable, "-m", "waste_edge.cli", "predict", str(photo), "--out", str(out), "--no-progress"],
                   cwd=REPO, check=True, capture_output=True, text=True, timeout=300)
    (row,) = list(csv.DictReader(out.open()))
    return row


def test_classify_answers_what_predict_answers_on_a_real_photo(server, client, waste_sample):
    photo = sorted((waste_sample / "TEST" / "N").glob("*.jpg"))[0]
    data = photo.read_bytes()
    raw = client.post("/api/v1/classify", content=data, headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 200, raw.text
    multi = client.post("/api/v1/classify", files={"file": (photo.name, data, "image/jpeg")})
    assert multi.status_code == 200, multi.text
    row = _predict_row(photo, server.tmp)
    for answer in (raw.json(), multi.json()):
        assert answer["label"] == row["label"]
        assert answer["confidence"] == pytest.approx(float(row["confidence"]), abs=1e-6)
        for c in ("B", "N"):
            assert answer["probabilities"][c] == pytest.approx(float(row[f"p_{c}"]), abs=1e-6)
        assert answer["model"]["sha256"] == client.get("/api/v1/status").json()["model"]["sha256"]
        assert answer["display_name"] in ("biodegradable", "non-biodegradable")


def _png(w, h) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(w=64, h=48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_bad_bodies_get_4xx_never_500(server, client):
    good = _jpeg()
    gif = io.BytesIO(); Image.new("RGB", (8, 8)).save(gif, "GIF")
    cases = {
        "empty": (dict(content=b""), 422),
        "not an image": (dict(content=b"hello world"), 415),
        "text content type": (dict(content=good, headers={"Content-Type": "text/plain"}), 415),
        "gif": (dict(content=gif.getvalue(), headers={"Content-Type": "image/gif"}), 415),
        "gif bytes as octet-stream": (dict(content=gif.getvalue(), headers={"Content-Type": "application/octet-stream"}), 415),
        "truncated jpeg": (dict(content=good[: len(good) // 2], headers={"Content-Type": "image/jpeg"}), 422),
        "png magic then garbage": (dict(content=b"\x89PNG\r\n\x1a\n" + b"\0" * 100), 422),
        "too many pixels": (dict(content=_png(1200, 1000), headers={"Content-Type": "image/png"}), 413),
        "too many bytes": (dict(content=good + b"\0" * (1024 * 1024 + 10), headers={"Content-Type": "image/jpeg"}), 413),
        "too many bytes, chunked": (dict(content=iter([good] + [b"\0" * 65536] * 20), headers={"Content-Type": "image/jpeg"}), 413),
        "multipart without file": (dict(files={"photo": ("a.jpg", good, "image/jpeg")}), 422),
        "multipart, no boundary": (dict(content=good, headers={"Content-Type": "multipart/form-data"}), 422),
        "multipart, garbage": (dict(content=b"--x\r\nnonsense", headers={"Content-Type": "multipart/form-data; boundary=x"}), 422),
    }
    for name, (kwargs, status) in cases.items():
        r = client.post("/api/v1/classify", **kwargs)
        assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
        assert "detail" in r.json(), name
    assert client.post("/api/v1/classify", content=good, headers={"Content-Type": "image/jpeg"}).status_code == 200
    assert client.get("/api/v1/classify").status_code == 405
    assert client.get("/stream/nope.mjpg").status_code == 404
    metrics = client.get("/metrics").text
    assert 'waste_edge_classify_requests_total{status="500"}' not in metrics
    assert 'waste_edge_classify_requests_total{status="415"}' in metrics


def test_metrics_stream_and_events(server, client):
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for name in ("waste_edge_frames_total{camera=\"cam0\"}", "waste_edge_decisions_total{camera=\"cam0\",label=\"B\"}",
                 "waste_edge_dropped_frames_total", "waste_edge_reconnects_total", "waste_edge_inference_seconds_bucket", "waste_edge_model_info"):
        assert name in text, name
    with client.stream("GET", "/stream/cam0.mjpg") as r:
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
        buf = b""
        for chunk in r.iter_bytes():
            buf += chunk
            if buf.count(b"\xff\xd9") >= 2:
                break
    assert buf.startswith(b"--waste-edge-frame\r\nContent-Type: image/jpeg\r\nContent-Length: ")
    start = buf.index(b"\r\n\r\n") + 4
    length = int(buf[: start].split(b"Content-Length: ")[1].split(b"\r\n")[0])
    img = Image.open(io.BytesIO(buf[start : start + length]))
    assert img.size == (320, 240)
    events = read_sse(client)
    d = events["decision"][0]
    assert d["camera"] == "cam0" and d["label"] in ("B", "N", "uncertain") and set(d["probabilities"]) == {"B", "N"}
    assert events["stats"][-1]["cameras"][0]["id"] == "cam0"


def test_sigterm_exits_0_with_complete_jsonl(server, client):
    frames_before = client.get("/api/v1/status").json()["cameras"][0]["counters"]["frames"]
    assert frames_before > 0
    t0 = time.monotonic()
    assert server.terminate() == 0, server.output
    assert time.monotonic() - t0 < 30
    lines = (server.tmp / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line is whole JSON
    stop = events[-1]
    assert stop["event"] == "stop" and stop["camera"] == "cam0" and stop["state"] == "stopped"
    frames = [e for e in events if "label" in e]
    assert len(frames) == stop["frames"] >= frames_before
    assert sum(stop["labels"].values()) == stop["frames"]
    assert all(e["camera"] == "cam0" and set(e["probabilities"]) == {"B", "N"} for e in frames)
    assert "stopped (SIGTERM)" in server.output
