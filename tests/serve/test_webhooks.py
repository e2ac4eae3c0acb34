"""`--webhook`: a real HTTP receiver on 127.0.0.1 that is down, slow, answers 500, then recovers; 2xx is
delivered, retries back off, the bounded queue drops the oldest and counts it, 4xx and redirects are final,
bodies are signed (HMAC-SHA256 over "t.body") and a receiver can verify them. Every test checks that the
counters add up to the messages offered: nothing is lost beyond what is counted."""

from __future__ import annotations

import socket
import time

import pytest

from tests.serve.conftest import wait_for
from tests.serve.webhook_receiver import Receiver
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.decision_event import DECISION_KEYS, DecisionEvent
from waste_edge.serve.webhooks import (
    DELIVERY_HEADER, SIGNATURE_HEADER, WebhookSecret, WebhookSender, WebhookStatus, load_secret, redact_url, sign, verify_signature,
)

FAST = {"backoff": (0.05, 0.2), "timeout": 2.0}


def event(i: int, camera: str = "cam0") -> DecisionEvent:
    label = ("B", "N", "uncertain")[i % 3]
    return DecisionEvent(camera, label, label, 0.75, {"B": 0.75, "N": 0.25}, None, i, "cd" * 32, time.time())


def assert_accounted(s: WebhookStatus) -> None:
    assert s.delivered + s.dropped + s.failed + s.unsent + s.queued + int(s.in_flight) == s.offered, s


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(script=None, port: int = 0) -> Receiver:
        made.append(Receiver(script, port))
        return made[-1]

    yield make
    for r in made:
        r.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_delivered_signed_and_verifiable(receivers):
    rx = receivers([200])
    secret = WebhookSecret(b"s3cret-for-tests", "test")
    w = WebhookSender(rx.url, secret=secret, **FAST)
    for i in range(3):
        w.on_decision(event(i))
    w.close(10)
    got = rx.received()
    assert [r.doc["seq"] for r in got] == [1, 2, 3] and [r.doc["frame"] for r in got] == [0, 1, 2]
    for r in got:
        assert tuple(r.doc) == DECISION_KEYS and r.doc["schema"] == "waste-edge.decision/1"
        assert r.headers["Content-Type"] == "application/json" and r.headers["User-Agent"].startswith("waste-edge/")
        header = r.headers[SIGNATURE_HEADER]
        assert header.startswith("t=") and ",v1=" in header
        assert verify_signature(secret.value, header, r.body)
        assert not verify_signature(secret.value, header, r.body.replace(b'"cam0"', b'"cam9"')), "a changed body must not verify"
        assert not verify_signature(b"another secret", header, r.body)
        assert not verify_signature(secret.value, header, r.body, now=time.time() + 3600), "an old signature is a replay"
    assert len({r.headers[DELIVERY_HEADER] for r in got}) == 3
    s = w.status()
    assert (s.offered, s.delivered, s.retries, s.dropped, s.failed, s.unsent) == (3, 3, 0, 0, 0, 0) and s.up and s.signed
    assert_accounted(s)
    # the documented format, recomputed independently
    import hashlib
    import hmac

    t = int(got[0].headers[SIGNATURE_HEADER].split(",")[0][2:])
    assert sign(secret.value, got[0].body, t) == f"t={t},v1=" + hmac.new(secret.value, f"{t}.".encode() + got[0].body, hashlib.sha256).hexdigest()


def test_down_then_recovering_delivers_everything_in_order(receivers):
    port = closed_port()
    w = WebhookSender(f"http://127.0.0.1:{port}/hook", **FAST)
    for i in range(4):
        w.on_decision(event(i))
    wait_for(lambda: w.status().retries >= 3, 30, "retries while the receiver is down")
    s = w.status()
    assert not s.up and "cannot connect" in s.last_error and s.delivered == 0
    assert_accounted(s)
    rx = receivers([200], port=port)  # the receiver comes up on that port
    wait_for(lambda: w.status().delivered == 4, 30, "delivery after recovery")
    assert [d["seq"] for d in rx.delivered_docs()] == [1, 2, 3, 4]
    w.close(5)
    s = w.status()
    assert s.up and (s.dropped, s.failed, s.unsent) == (0, 0, 0)
    assert_accounted(s)


def test_500_is_retried_until_it_recovers(receivers):
    rx = receivers([500, 503, 500, 200])
    w = WebhookSender(rx.url, **FAST)
    w.on_decision(event(0))
    w.on_decision(event(1))
    wait_for(lambda: w.status().delivered == 2, 30, "delivery after three 5xx answers")
    w.close(5)
    assert [r.status for r in rx.received()] == [500, 503, 500, 200, 200]
    assert [d["seq"] for d in rx.delivered_docs()] == [1, 2]
    s = w.status()
    assert (s.retries, s.failed, s.last_status) == (3, 0, 200)
    assert_accounted(s)


def test_a_slow_receiver_is_retried_after_the_timeout_at_least_once(receivers):
    rx = receivers([("slow", 3.0), 200])
    w = WebhookSender(rx.url, backoff=(0.05, 0.2), timeout=1.0)
    w.on_decision(event(0))
    wait_for(lambda: w.status().delivered == 1, 30, "delivery after a timed-out attempt")
    w.close(5)
    got = rx.received()
    assert len(got) >= 2 and len({r.headers[DELIVERY_HEADER] for r in got}) == 1, "a retry carries the same delivery id"
    assert len(rx.delivered_docs()) == 1, "a receiver that drops duplicates by delivery id sees the message once"
    s = w.status()
    assert s.retries == len(got) - 1 >= 1 and s.delivered == 1
    assert_accounted(s)


def test_the_full_queue_drops_the_oldest_and_counts_it(receivers):
    port = closed_port()
    w = WebhookSender(f"http://127.0.0.1:{port}/hook", queue_size=3, **FAST)
    for i in range(10):
        w.on_decision(event(i))
    wait_for(lambda: w.status().retries >= 1, 30, "a failed attempt")
    rx = receivers([200], port=port)
    wait_for(lambda: w.status().queued == 0 and not w.status().in_flight, 30, "the queue to drain")
    w.close(5)
    assert [d["seq"] for d in rx.delivered_docs()] == [8, 9, 10], "after an outage the newest messages arrive, not stale ones"
    s = w.status()
    assert (s.offered, s.delivered, s.dropped) == (10, 3, 7)
    assert_accounted(s)


@pytest.mark.parametrize("status", [400, 302])
def test_4xx_and_redirects_are_final_never_followed(receivers, status):
    rx = receivers([status, 200])
    w = WebhookSender(rx.url, **FAST)
    w.on_decision(event(0))
    w.on_decision(event(1))
    wait_for(lambda: w.status().failed + w.status().delivered == 2, 30, "both messages settled")
    w.close(5)
    got = rx.received()
    assert [(r.status, r.doc["seq"]) for r in got] == [(status, 1), (200, 2)], "no retry, no GET to the redirect target"
    s = w.status()
    assert (s.failed, s.delivered, s.retries) == (1, 1, 0)
    assert_accounted(s)


def test_close_with_the_receiver_down_counts_the_rest_as_unsent():
    w = WebhookSender(f"http://127.0.0.1:{closed_port()}/hook", **FAST)
    for i in range(5):
        w.on_decision(event(i))
    t0 = time.monotonic()
    w.close(0.5)
    assert time.monotonic() - t0 < 10
    s = w.status()
    assert (s.delivered, s.unsent, s.queued, s.in_flight) == (0, 5, 0, False)
    w.on_decision(event(6))  # after close: counted, never sent
    assert w.status().unsent == 6
    assert_accounted(w.status())


def test_secret_sources_and_url_checks(tmp_path):
    f = tmp_path / "secret"
    f.write_text("abc123\n")
    f.chmod(0o600)
    assert load_secret(f, {}).value == b"abc123"
    assert load_secret(None, {"WASTE_EDGE_WEBHOOK_SECRET": "xyz"}).value == b"xyz"
    assert load_secret(None, {}) is None
    assert "abc123" not in repr(load_secret(f, {})), "the secret is never printed"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(WasteEdgeError, match="empty"):
        load_secret(tmp_path / "empty", {})
    with pytest.raises(WasteEdgeError, match="No such file"):
        load_secret(tmp_path / "missing", {})
    with pytest.raises(WasteEdgeError, match="http"):
        WebhookSender("ftp://example.org/x")
    assert redact_url("https://user:pw@hooks.example.org:8443/p/q?token=abc") == "https://hooks.example.org:8443/p/q?..."


@pytest.mark.parametrize("args, message", [
    (["--webhook", "http://127.0.0.1:9/x", "--webhook-secret", "hunter2-secret"], "secret on the command line"),
    (["--webhook-secret-file", "/nonexistent"], "nothing to sign"),
    (["--webhook", "ftp://example.org/x"], "expected http://"),
    (["--mqtt-discovery"], "needs --mqtt"),
    (["--mqtt", "mqtt://127.0.0.1/x", "--mqtt-discovery", "home/#"], "no wildcards"),
    (["--on-decision", "no-such-program-waste-edge"], "not on PATH"),
])
def test_serve_refuses_bad_action_options_in_one_line(args, message, capsys):
    from waste_edge.cli import main

    assert main(["serve", *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "hunter2-secret" not in err, err
