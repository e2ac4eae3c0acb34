"""HTTP section of the hostile-input suite: ONE real `serve` subprocess on loopback, attacked as a network would.

The service runs a generated video as its camera, with a token from a file, a collection folder with labelled
frames, a models folder holding bad models (NaN answers, other classes, not ONNX, a symbolic link) and small
limits, so every refusal is reached quickly. Tests run in file order on that one process (about a minute):
every route without / with a wrong token, malformed and oversized bodies, path-like values in every field,
cross-site and DNS-rebinding requests, hot swaps of bad models, NaN at run time, slow, idle and half-open clients,
many SSE / MJPEG clients coming and going, a client that stops reading its response; then the log (no traceback, bounded), the
file system (nothing written outside the documented places) and a clean SIGTERM. Nothing is mocked.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from tests.faults.conftest import digest_tree
from tests.runtime.tiny_model import make_fused_model
from tests.serve.conftest import ServeProcess, alternating_video, wait_for
from waste_edge._io import file_sha256
from waste_edge.runtime.collection import write_labels

pytestmark = pytest.mark.usefixtures("serve_extra")

TOKEN = secrets.token_hex(16)
HEADER_TIMEOUT, BODY_TIMEOUT, SEND_TIMEOUT = 2.0, 3.0, 2.0
WARM_BGR, COOL_BGR = (40, 90, 210), (210, 90, 40)  # the tiny model: warm (red) is B, cool is N
# Written by the service by design: its models folder, labels.csv and collected frames, the JSONL, its cache.
DOCUMENTED = ("models/", "collect/", "events.jsonl", "cache/")


@pytest.fixture(scope="session")
def serve_extra():
    for mod in ("fastapi", "uvicorn", "prometheus_client", "multipart", "httpx"):
        pytest.importorskip(mod, reason=f"{mod} is not installed (pip install 'waste-edge[serve,test]')")


def _jpeg(bgr: tuple[int, int, int], size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), bgr[::-1], np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http-faults")
    served = make_fused_model(tmp / "served" / "tiny.onnx", channel_order="BGR", with_embedding=True)
    models = tmp / "models"
    make_fused_model(models / "nan.onnx", channel_order="BGR", scale=float("nan"))
    make_fused_model(models / "three.onnx", channel_order="BGR", classes=("B", "N", "X"))
    make_fused_model(models / "strong.onnx", channel_order="BGR", scale=40.0, with_embedding=True)
    make_fused_model(models / "nanwarm.onnx", channel_order="BGR", nan_above=150, with_embedding=True)
    (models / "notonnx.onnx").write_bytes(b"this is not an ONNX model\n" * 10)
    os.symlink(served, models / "link.onnx")
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(_jpeg(WARM_BGR))
    make_fused_model(outside / "secret.onnx", channel_order="BGR", scale=20.0)
    collect = tmp / "collect"
    collect.mkdir()
    names = {}
    for i in range(8):
        name = f"frame{i}.jpg"
        (collect / name).write_bytes(_jpeg(WARM_BGR if i % 2 else COOL_BGR))
        names[name] = "B" if i % 2 else "N"
    write_labels(collect, names)
    os.symlink(outside / "secret.jpg", collect / "link.jpg")
    (collect / "big.png").write_bytes(os.urandom(24 * 1024 * 1024))  # served to a client that never reads it
    token = tmp / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    video = alternating_video(tmp / "cam.mp4", n=60, every=5, fps=15, size=(160, 120))
    before = digest_tree(tmp)
    proc = ServeProcess(["--model", str(served), "--backend", "cpu", "--threads", "1", "--device", str(video), "--loop", "--realtime",
                         "--token-file", str(token), "--collect", str(collect), "--collect-below", "0.01", "--models-dir", str(models),
                         "--jsonl", str(tmp / "events.jsonl"), "--max-body-mb", "1", "--max-json-kb", "64", "--max-model-mb", "1",
                         "--max-pixels", "1000000", "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
                         "--send-timeout", str(SEND_TIMEOUT), "--max-connections", "200", "--stream-fps", "30"], tmp)
    proc.tmp, proc.before, proc.served, proc.port = tmp, before, served, int(proc.url.rsplit(":", 1)[1])
    yield proc
    proc.terminate()


@pytest.fixture(scope="module")
def http(site):
    import httpx

    with httpx.Client(base_url=site.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        wait_for(lambda: c.get("/healthz").status_code == 200, 60, "/healthz 200")
        yield c


def frames(http) -> int:
    return http.get("/api/v1/status").json()["cameras"][0]["counters"]["frames"]


def serving(http) -> str:
    return http.get("/api/v1/status").json()["model"]["sha256"]


def assert_4xx(r, *allowed: int) -> None:
    assert 400 <= r.status_code < 500 and (not allowed or r.status_code in allowed), f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:300]}"
    assert "detail" in r.json()


def post_json(http, path: str, doc: object):
    """json.dumps escapes lone surrogates (httpx's json= cannot send them at all)."""
    return http.post(path, content=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})


# -- who may call ----------------------------------------------------------------------------------------------


def test_every_route_needs_the_token(site, http):
    import httpx

    spec = httpx.get(site.url + "/api/openapi.json").json()
    routes = [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops]
    must = {("GET", "/api/v1/status"), ("GET", "/api/v1/events"), ("GET", "/metrics"), ("GET", "/stream/{camera}.mjpg"),
            ("POST", "/api/v1/classify"), ("GET", "/api/v1/review"), ("GET", "/api/v1/review/frame/{file}"), ("POST", "/api/v1/review/labels"),
            ("POST", "/api/v1/adapt"), ("POST", "/api/v1/model"), ("GET", "/api/v1/models")}
    assert must <= set(routes), set(routes)
    open_routes = {("GET", "/healthz")}
    for method, path in routes:
        url = site.url + path.replace("{camera}", "cam0").replace("{file}", "frame0.jpg")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"bearer {TOKEN[:-1]}"}):
            r = httpx.request(method, url, headers={**headers, "Content-Type": "application/json"}, content=b"{}", timeout=30)
            if (method, path) in open_routes:
                assert r.status_code in (200, 503)
            else:
                assert r.status_code == 401, f"{method} {path} {headers}: {r.status_code}"
                assert r.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(site.url + "/").status_code == 200  # the page itself holds no data
    assert http.get("/api/v1/status").status_code == 200


# -- bodies ----------------------------------------------------------------------------------------------------


GARBAGE = [b"", b"{", b"null", b"[]", b"5", b'"x"', b"true", b'{"out": 5}', b'{"out": ["x"]}', b'{"labels": 5}', b'{"labels": {"frame0.jpg": 5}}',
           b'{"labels": {"frame0.jpg": ["B"]}}', b'{"labels": {"frame0.jpg": {"a": 1}}}', b'{"labels": {}, "x": 1}', b'{"name": 5}',
           b'{"name": null}', b'{"name": "a", "sha256": "b"}', b'{"sha256": "zz"}', b'{"path": "x.onnx"}', b"\xff\xfe\x00garbage",
           b'{"labels": {"\\ud800": "B"}}', b"[" * 30000 + b"]" * 30000, b'{"a":' * 10000 + b"1" + b"}" * 10000]


def test_malformed_json_bodies_answer_4xx(site, http):
    sha = serving(http)
    for path in ("/api/v1/review/labels", "/api/v1/adapt", "/api/v1/model"):
        for body in GARBAGE:
            if path == "/api/v1/adapt" and body in (b"", b"null"):
                continue  # no body is a valid adapt request (tested below)
            r = http.post(path, content=body, headers={"Content-Type": "application/json"})
            assert_4xx(r)
    assert serving(http) == sha


def test_oversized_bodies_answer_413(site, http):
    big = b'{"labels": {"' + b"a" * (70 * 1024) + b'": "B"}}'
    assert_4xx(http.post("/api/v1/review/labels", content=big, headers={"Content-Type": "application/json"}), 413)
    chunked = iter([b'{"labels": {"', *([b"a" * 8192] * 20), b'": "B"}}'])
    assert_4xx(http.post("/api/v1/review/labels", content=chunked, headers={"Content-Type": "application/json"}), 413)
    assert_4xx(http.post("/api/v1/adapt", content=big, headers={"Content-Type": "application/json"}), 413)
    assert_4xx(http.post("/api/v1/classify", content=b"\xff\xd8\xff" + b"\0" * (2 * 1024 * 1024), headers={"Content-Type": "image/jpeg"}), 413)
    assert_4xx(http.post("/api/v1/model", files={"file": ("m.onnx", b"\0" * (2 * 1024 * 1024))}), 413)
    # A 15000 x 15000 PNG (a few KB): too many pixels, read from its header before decoding: 413, not "corrupt".
    png = io.BytesIO()
    Image.new("1", (15000, 15000)).save(png, "PNG")
    r = http.post("/api/v1/classify", content=png.getvalue(), headers={"Content-Type": "image/png"})
    assert_4xx(r, 413)
    assert "corrupt" not in r.json()["detail"]
    # A GET with a body over the limit is refused before it is read, too.
    assert http.request("GET", "/api/v1/status", content=b"x" * (70 * 1024)).status_code == 413


def test_path_like_values_never_reach_the_file_system(site, http):
    tmp = site.tmp
    secret_sha = file_sha256(tmp / "outside" / "secret.onnx")
    names = ["../outside/secret.jpg", "/etc/passwd", str(tmp / "outside" / "secret.jpg"), "frame0.jpg\x00.png", "a\x00b", "..",
             ".", "", "./frame0.jpg", "frame0.jpg/..", "collect/frame0.jpg", "..\\outside\\secret.jpg", "C:\\Windows\\win.ini",
             "~/frame0.jpg", "link.jpg", "labels.csv", "frame0.json", "models/nan.onnx", "x" * 5000, "\ud800", "frame0.jpg\n",
             "%2e%2e/outside/secret.jpg", "/proc/self/environ", "/dev/zero"]
    for name in names:
        assert_4xx(post_json(http, "/api/v1/review/labels", {"labels": {name: "B"}}), 422)
        assert_4xx(post_json(http, "/api/v1/review/labels", {"labels": {"frame0.jpg": name}}), 422)
        assert_4xx(post_json(http, "/api/v1/model", {"name": name}), 404, 422)
        assert_4xx(post_json(http, "/api/v1/adapt", {"out": name}), 422)
    for raw_path in ("%00", "..%2F..%2Foutside%2Fsecret.jpg", "..%2Foutside%2Fsecret.jpg", "%2Fetc%2Fpasswd", "link.jpg", "labels.csv",
                     "frame0.json", "models/nan.onnx", "frame0.jpg%00", "%C0%AE%C0%AE%2Fx", "%ff%fe", "a" * 3000):
        r = http.get("/api/v1/review/frame/" + raw_path)
        assert_4xx(r, 404)
    assert http.get("/api/v1/review/frame/frame0.jpg").status_code == 200
    for sha in (secret_sha, "0" * 64):
        assert_4xx(http.post("/api/v1/model", json={"sha256": sha}), 404)
    listed = {m["name"] for m in http.get("/api/v1/models").json()["models"]}
    assert listed == {"nan.onnx", "three.onnx", "strong.onnx", "nanwarm.onnx", "notonnx.onnx", "tiny.onnx"}  # no link.onnx, no secret


# -- cross-site requests and DNS rebinding -------------------------------------------------------------------------


def test_cross_site_and_rebinding_requests_are_refused(site, http):
    labels = json.dumps({"labels": {"frame0.jpg": "N"}}).encode()
    own = f"http://127.0.0.1:{site.port}"
    refused = [
        ({"Origin": "http://evil.example", "Content-Type": "application/json"}, 403),
        ({"Origin": "null", "Content-Type": "application/json"}, 403),
        ({"Origin": f"http://localhost:{site.port + 1}", "Content-Type": "application/json"}, 403),
        ({"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}, 403),
        ({"Sec-Fetch-Site": "same-site", "Content-Type": "application/json"}, 403),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
        ({"Host": f"evil.example:{site.port}", "Content-Type": "application/json"}, 400),
        ({"Host": "rebind.attacker.test", "Content-Type": "application/json"}, 400),
    ]
    for path in ("/api/v1/review/labels", "/api/v1/adapt", "/api/v1/model"):
        for headers, status in refused:
            if path == "/api/v1/model" and "multipart" in headers["Content-Type"]:
                continue  # the model route takes uploads
            assert_4xx(http.post(path, content=labels, headers=headers), status)
    assert_4xx(http.get("/api/v1/status", headers={"Host": "evil.example"}), 400)
    # The page's own requests (same origin) and curl (no Origin) pass.
    for headers in ({"Origin": own, "Sec-Fetch-Site": "same-origin"}, {"Host": f"localhost:{site.port}"}, {"Host": f"[::1]:{site.port}"}, {}):
        r = http.post("/api/v1/review/labels", content=labels, headers={**headers, "Content-Type": "application/json"})
        assert r.status_code == 200, (headers, r.text)


# -- models -----------------------------------------------------------------------------------------------------


def test_hot_swap_of_bad_models_keeps_the_served_one(site, http):
    sha = serving(http)
    for name, status, needle in (("nan.onnx", 422, "non-finite"), ("three.onnx", 422, "classes"), ("notonnx.onnx", 422, "cannot load"),
                                 ("link.onnx", 404, "no model"), ("../served/tiny.onnx", 404, "no model")):
        r = http.post("/api/v1/model", json={"name": name})
        assert_4xx(r, status)
        assert needle in r.json()["detail"], r.text
    models = site.tmp / "models"
    listing = sorted(p.name for p in models.iterdir())
    for data in ((models / "nan.onnx").read_bytes()[:-1] + b"\0", b"\0" * 1000, (models / "three.onnx").read_bytes()):
        assert_4xx(http.post("/api/v1/model", files={"file": ("m.onnx", data)}), 422)
    assert sorted(p.name for p in models.iterdir()) == listing  # refused uploads are not kept
    assert serving(http) == sha
    n = frames(http)
    wait_for(lambda: frames(http) > n + 3, 30, "frames after refused swaps")
    assert http.get("/healthz").status_code == 200
    r = http.post("/api/v1/model", json={"name": "strong.onnx"})
    assert r.status_code == 200 and r.json()["model"]["name"] == "strong.onnx"
    r = http.post("/api/v1/model", json={"sha256": sha})  # back to the startup model, by sha256
    assert r.status_code == 200 and serving(http) == sha


def test_nan_at_run_time_is_an_error_never_a_label(site, http):
    sha = serving(http)
    assert http.post("/api/v1/model", json={"name": "nanwarm.onnx"}).status_code == 200  # passes the probe, NaN on warm frames
    try:
        r = http.post("/api/v1/classify", content=_jpeg(WARM_BGR), headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 503 and "non-finite" in r.json()["detail"] and "label" not in r.json()
        health = http.get("/healthz")
        assert health.status_code == 503 and any("nanwarm.onnx" in x for x in health.json()["reasons"])
        assert http.post("/api/v1/classify", content=_jpeg(COOL_BGR), headers={"Content-Type": "image/jpeg"}).json()["label"] == "N"
        cam = wait_for(lambda: (c := http.get("/api/v1/status").json()["cameras"][0])["counters"]["inference_errors"] >= 3 and c, 30, "camera errors")
        assert cam["counters"]["inference_errors"] >= 3
        wait_for(lambda: http.get("/healthz").status_code == 503, 30, "/healthz 503 while the camera's frames fail")
    finally:
        assert http.post("/api/v1/model", json={"sha256": sha}).status_code == 200
    wait_for(lambda: http.get("/healthz").status_code == 200, 30, "/healthz 200 after the swap back")
    events = [json.loads(line) for line in (site.tmp / "events.jsonl").read_text().splitlines()]
    errors = [e for e in events if "error" in e]
    assert errors and all("non-finite" in e["error"] for e in errors)
    assert all(np.isfinite(list(e["probabilities"].values())).all() for e in events if "label" in e)


def test_adapt_writes_only_a_new_file_into_the_models_folder(site, http):
    models = site.tmp / "models"
    before = {p.name for p in models.iterdir()}
    for body in ({"out": str(site.tmp / "outside" / "x.onnx")}, {"out": "../x.onnx"}, {"name": "x"}):
        assert_4xx(http.post("/api/v1/adapt", json=body), 422)
    assert {p.name for p in models.iterdir()} == before
    r = http.post("/api/v1/adapt")  # no body at all
    assert r.status_code == 200, r.text
    new = {p.name for p in models.iterdir()} - before
    assert len(new) == 1 and next(iter(new)).startswith("tiny-adapted-") and r.json()["model"]["name"] in new


# -- slow, idle and half-open clients ---------------------------------------------------------------------------


def _closed_within(site, payload: bytes, seconds: float) -> tuple[float, bytes]:
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", site.port), timeout=seconds + 10) as s:
        if payload:
            s.sendall(payload)
        got = b""
        while chunk := s.recv(4096):
            got += chunk
    return time.monotonic() - t0, got


def test_slow_and_idle_clients_are_cut(site, http):
    took, got = _closed_within(site, b"", HEADER_TIMEOUT)  # connects, says nothing
    assert HEADER_TIMEOUT - 0.5 < took < HEADER_TIMEOUT + 5 and got == b""
    took, got = _closed_within(site, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", HEADER_TIMEOUT)  # half a head
    assert took < HEADER_TIMEOUT + 5 and got.startswith(b"HTTP/1.1 408")
    # One byte every 0.3 s: every byte used to reset uvicorn's only timer.
    t0 = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", site.port), timeout=20) as s:
        try:
            for ch in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200:
                s.send(bytes([ch]))
                time.sleep(0.3)
                if time.monotonic() - t0 > HEADER_TIMEOUT + 5:
                    break
            answer = s.recv(4096)
        except OSError:  # reset: the server closed while we were still sending
            answer = b"closed"
    took = time.monotonic() - t0
    assert took < HEADER_TIMEOUT + 5 and (answer.startswith(b"HTTP/1.1 408") or answer in (b"", b"closed")), (took, answer)
    # A body announced and never sent: cut at the body deadline.
    head = (f"POST /api/v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: image/jpeg\r\n"
            "Content-Length: 100000\r\n\r\n").encode() + b"\xff\xd8\xff"
    took, _ = _closed_within(site, head, BODY_TIMEOUT)
    assert BODY_TIMEOUT - 0.5 < took < BODY_TIMEOUT + 5
    assert http.get("/healthz").status_code == 200


def test_1100_half_open_connections_leave_the_service_answering(site, http):
    n0 = frames(http)
    socks = []
    try:
        for _ in range(1100):
            s = socket.create_connection(("127.0.0.1", site.port), timeout=10)
            s.send(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        for _ in range(5):
            t0 = time.monotonic()
            assert http.get("/healthz").status_code == 200
            assert time.monotonic() - t0 < 5.0
            time.sleep(0.2)
        status = http.get("/api/v1/status").json()
        assert status["http"]["open_connections"] <= 200 + 10  # the cap (and this client's own connection)
        assert status["http"]["events"]["evicted_idle"] >= 800
    finally:
        for s in socks:
            s.close()
    assert frames(http) > n0  # the frame loop kept running
    wait_for(lambda: http.get("/api/v1/status").json()["http"]["open_connections"] <= 3, HEADER_TIMEOUT + 10, "idle connections closed")


def test_many_stream_clients_coming_and_going(site, http):
    def client(path: str, rounds: int) -> None:
        for _ in range(rounds):
            with socket.create_connection(("127.0.0.1", site.port), timeout=20) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
                got = b""
                while len(got) < 2000:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                assert got.startswith(b"HTTP/1.1 200"), got[:200]

    threads = [threading.Thread(target=client, args=("/api/v1/events", 3)) for _ in range(50)]
    threads += [threading.Thread(target=client, args=("/stream/cam0.mjpg", 3)) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)

    def settled():
        s = http.get("/api/v1/status").json()
        return s["events_subscribers"] == 0 and s["cameras"][0]["stream_viewers"] == 0

    wait_for(settled, 30, "every SSE subscription and MJPEG viewer released")
    assert http.get("/healthz").status_code == 200


def test_a_client_that_stops_reading_is_cut(site, http):
    """A response nobody reads (a frame of 24 MB here; an MJPEG viewer that froze, slower) fills the socket buffers;
    after --send-timeout the connection is aborted instead of holding its buffers and its generator for ever."""
    cut = http.get("/api/v1/status").json()["http"]["events"].get("send_timeout", 0)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", site.port))
    try:
        s.sendall(f"GET /api/v1/review/frame/big.png HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        wait_for(lambda: http.get("/api/v1/status").json()["http"]["events"].get("send_timeout", 0) > cut, SEND_TIMEOUT + 20, "the stalled reader cut")
    finally:
        s.close()


# -- afterwards ---------------------------------------------------------------------------------------------------


def test_the_log_has_no_traceback_and_stays_small(site, http):
    assert http.get("/healthz").status_code == 200
    text = site.output
    assert "Traceback" not in text and "Exception in ASGI" not in text, text[-3000:]
    assert len(text.splitlines()) < 150 and len(text) < 40_000, text[-3000:]


def test_nothing_is_written_outside_the_documented_places(site):
    after = digest_tree(site.tmp)
    changed = {k for k in set(site.before) | set(after) if site.before.get(k) != after.get(k)}
    assert all(k.startswith(DOCUMENTED) for k in changed), sorted(changed)
    collect = {k for k in changed if k.startswith("collect/")}
    assert collect <= {"collect/labels.csv"}, collect  # no frame was added (below 0.01) or changed
    assert (site.tmp / "outside" / "secret.jpg").read_bytes() == _jpeg(WARM_BGR)


def test_sigterm_still_exits_0(site):
    assert site.terminate() == 0, site.output
