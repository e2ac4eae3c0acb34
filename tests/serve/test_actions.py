"""Acting on decisions, end to end: a real `serve` subprocess on a generated video whose decision cycles B -> N ->
uncertain, a real --on-decision script that succeeds on B, exits 1 on N and hangs on uncertain, a webhook
receiver that answers 500, 500, then too slowly, then recovers, a second webhook that is down the whole time,
and latest.jpg behind the token. After SIGTERM (exit 0) every decision change is accounted for: the healthy
webhook got every one (seq 1..N, signed), the down one and the hook count exactly what they did not do."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.test_hooks import SCRIPT, alive
from tests.runtime.tiny_model import make_fused_model
from tests.serve.conftest import ServeProcess, wait_for, write_video
from tests.serve.webhook_receiver import Receiver
from waste_edge.serve.webhooks import SIGNATURE_HEADER, verify_signature

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("serve_extra")]
TOKEN = "test-token-123"
SECRET = b"webhook-secret-for-tests"
FPS = 15.0


def three_phase_video(path: Path, n: int = 90, every: int = 5) -> Path:
    """Warm (B), cool (N) and grey (uncertain at --threshold 0.6) frames taking turns every `every` frames."""
    w, h = 64, 48
    phases = [np.full((h, w, 3), c, np.uint8) for c in ((40, 90, 210), (210, 90, 40), (128, 128, 128))]
    return write_video(path, [phases[(i // every) % 3] for i in range(n)], FPS)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def final_counts(output: str, prefix: str) -> dict[str, int]:
    line = [l for l in output.splitlines() if l.startswith(prefix)][-1]  # the summary at exit, not the banner
    return {k.strip().replace(" ", "_"): int(v) for v, k in re.findall(r"(\d+) ([a-z ]+?)(?=[,;:(]|$)", line.split(": ", 1)[1])}


def test_hooks_webhooks_and_snapshots_account_for_every_decision(tmp_path):
    import cv2
    import httpx

    model = make_fused_model(tmp_path / "tiny.onnx", channel_order="BGR")
    video = three_phase_video(tmp_path / "cycle.mp4")
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)
    rec = tmp_path / "hook.jsonl"
    flaky = Receiver([500, 500, ("slow", 1.5), 200])
    down = f"http://127.0.0.1:{closed_port()}/down"
    hook_cmd = shlex.join([sys.executable, str(SCRIPT), "by-label", str(rec)])
    server = ServeProcess(["--model", str(model), "--device", f"door={video}", "--device", f"ghost=http://127.0.0.1:{closed_port()}/x.mjpg",
                           "--loop", "--realtime", "--threshold", "0.6", "--jsonl", str(tmp_path / "ev.jsonl"), "--token", TOKEN,
                           "--on-decision", hook_cmd, "--on-decision-timeout", "3",
                           "--webhook", flaky.url, "--webhook", down, "--webhook-queue", "20", "--webhook-timeout", "0.5",
                           "--webhook-secret-file", str(secret)], tmp_path)
    started = time.monotonic()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        assert f"on-decision: {hook_cmd}" in server.output and "signed, secret from file" in server.output
        with httpx.Client(base_url=server.url, timeout=60) as c:
            status = lambda: c.get("/api/v1/status", headers=auth).json()  # noqa: E731
            wait_for(lambda: len(flaky.delivered_docs()) >= 6, 90, "6 webhook deliveries after 500, 500 and a timeout")
            wait_for(lambda: (h := status()["on_decision"])["succeeded"] and h["failed"] and h["timed_out"], 90,
                     "the hook to succeed (B), fail (N) and time out (uncertain)")

            # latest.jpg: behind the token, the newest annotated frame, clear 404 / 503
            assert c.get("/api/v1/cameras/door/latest.jpg").status_code == 401
            r = c.get("/api/v1/cameras/door/latest.jpg", headers=auth)
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.headers["cache-control"] == "no-store"
            img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and img.shape == (48, 64, 3) and "last-modified" in r.headers
            r = c.get("/api/v1/cameras/ghost/latest.jpg", headers=auth)
            assert r.status_code == 503 and "no frame yet" in r.json()["detail"] and r.headers["retry-after"] == "1"
            for bad in ("nope", "..%2F..%2Fetc%2Fpasswd", "a" * 300, "door.jpg"):
                r = c.get(f"/api/v1/cameras/{bad}/latest.jpg", headers=auth)
                assert r.status_code == 404, (bad, r.status_code)
            assert "door" in c.get("/api/v1/cameras/nope/latest.jpg", headers=auth).json()["detail"]

            s = status()
            hooks, (w_flaky, w_down) = s["on_decision"], s["webhooks"]
            assert w_flaky["url"] == flaky.url and w_flaky["signed"] and w_flaky["retries"] >= 3
            assert not w_down["up"] and "cannot connect" in w_down["last_error"] and w_down["delivered"] == 0
            metrics = c.get("/metrics", headers=auth).text
            assert re.search(r'waste_edge_on_decision_runs_total\{outcome="timed_out"\} [1-9]', metrics)
            assert re.search(r'waste_edge_webhook_delivered_total\{url="%s"\} [1-9]' % re.escape(flaky.url), metrics)
            assert f'waste_edge_webhook_up{{url="{down}"}} 0.0' in metrics
        time.sleep(2)  # a few more changes while the down webhook's queue is full
        elapsed = time.monotonic() - started
        assert server.terminate() == 0, server.output
    finally:
        server.terminate()
        flaky.close()

    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    stop = next(e for e in events if e.get("event") == "stop" and e["camera"] == "door")
    changes = stop["counters"]["decision_changes"]
    assert changes >= 9, changes
    # the frame loop never waited for the hanging hook or the down webhook (loose: realtime at 15 frames/s)
    assert stop["frames"] >= 0.5 * FPS * elapsed, (stop["frames"], elapsed)

    # the healthy webhook: every decision change, once, in order, signed
    docs = flaky.delivered_docs()
    assert [d["seq"] for d in docs] == list(range(1, changes + 1)), "a lost or reordered webhook message"
    labels = [d["label"] for d in docs]
    assert all(a != b for a, b in zip(labels, labels[1:])) and set(labels) == {"B", "N", "uncertain"}
    assert all(verify_signature(SECRET, r.headers[SIGNATURE_HEADER], r.body) for r in flaky.received())
    out = server.output
    fl = final_counts(out, f"webhook {flaky.url}:")
    assert (fl["messages"], fl["delivered"], fl["dropped"], fl["failed"], fl["unsent_at_exit"]) == (changes, changes, 0, 0, 0), out

    # the down webhook: nothing delivered, everything counted
    dn = final_counts(out, f"webhook {down}:")
    assert dn["messages"] == changes and dn["delivered"] == 0
    assert dn["dropped"] + dn["failed"] + dn["unsent_at_exit"] == changes and 1 <= dn["unsent_at_exit"] <= 21, dn

    # the hook: every change ran, was skipped for a newer one, or is counted as left at exit
    h = final_counts(out, "on-decision:")
    assert h["decision_changes"] == changes
    assert h["ok"] + h["failed"] + h["timed_out"] + h["could_not_start"] + h["skipped_for_a_newer_one"] + h["left_at_exit"] == changes, h
    assert h["ok"] >= 1 and h["failed"] >= 1 and h["timed_out"] >= 1 and h["could_not_start"] == 0
    runs = [json.loads(line) for line in rec.read_text().splitlines()]
    assert h["ok"] + h["failed"] <= len(runs) <= h["ok"] + h["failed"] + h["left_at_exit"]  # B and N runs record; uncertain hangs
    assert all(json.loads(r["stdin"])["label"] == r["env"]["WASTE_EDGE_LABEL"] for r in runs)
    pids = [int(p) for p in Path(str(rec) + ".pids").read_text().split()]
    wait_for(lambda: not any(alive(p) for p in pids), 10, "every hanging hook and its child to be killed")
    assert "exit status 1" in out and "flap jammed" in out and "still running after 3 s" in out
    assert out.count("exit status 1") == 1, "a failing hook is logged once, then counted"
    assert os.environ.get("WASTE_EDGE_WEBHOOK_SECRET") is None
