"""The service's guards in-process: the one-line log, client names, Host / Origin rules, the token's sources, the
models folder, the open-file limit and the model probe. The same guards against a real process: tests/faults/test_http.py."""

from __future__ import annotations

import io
import logging
import os
import stat

import numpy as np
import pytest
from starlette.datastructures import Headers

from tests.runtime.tiny_model import make_fused_model
from waste_edge.errors import WasteEdgeError


def _logger(filt, name="t.onelinelog"):
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(filt)
    log = logging.getLogger(name)
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log, buf


def test_one_line_log_holds_back_repeats_and_flattens_tracebacks():
    from waste_edge.serve.logs import OneLineLog

    now = [0.0]
    filt = OneLineLog(interval_s=60, budget=5, clock=lambda: now[0])
    log, buf = _logger(filt)
    try:
        raise OSError(24, "Too many open files")
    except OSError as e:
        err = e
    for _ in range(10_000):  # what asyncio logged per accept() attempt under the idle-connection attack
        log.error("socket.accept() out of system resource\nsocket: <fd=3>", exc_info=err)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1 and "Traceback" not in buf.getvalue()
    assert lines[0].startswith("socket.accept() out of system resource | socket: <fd=3> (OSError: [Errno 24] Too many open files at ")
    for i in range(20):  # many kinds at once: the budget holds
        log.warning(f"kind {chr(97 + i)}: " + "x" * 5000)  # letters: numbers alone do not make a new kind
    lines = buf.getvalue().splitlines()
    assert len(lines) == 5 and all(len(line) <= 1000 for line in lines)
    now[0] = 61.0
    log.error("socket.accept() out of system resource\nsocket: <fd=3>", exc_info=err)
    last = buf.getvalue().splitlines()[-1]
    assert "[9999 more like this in the last 60 s]" in last and "[log budget: 16 lines of other kinds dropped]" in last


def test_client_names_are_walked_without_links(tmp_path):
    from waste_edge.serve.names import BadNameError, member_file

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(b"x")
    (root / "sub" / "b.jpg").write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"s")
    os.symlink(tmp_path / "secret.jpg", root / "link.jpg")
    os.symlink(tmp_path, root / "dirlink")
    os.mkfifo(root / "fifo.jpg")
    assert member_file(root, "a.jpg") == root / "a.jpg"
    assert member_file(root, "sub/b.jpg") == root / "sub" / "b.jpg"
    for bad in ("link.jpg", "dirlink/secret.jpg", "fifo.jpg", "sub", "../secret.jpg", "sub/../a.jpg", "/etc/passwd", "a.jpg\x00",
                "", ".hidden", "sub//b.jpg", "a\\b", "\ud800", "x" * 2000, "missing.jpg", None, 5, ["a.jpg"]):
        with pytest.raises(BadNameError):
            member_file(root, bad)


def _h(**headers):
    return Headers(headers={k.replace("_", "-"): v for k, v in headers.items()})


def test_host_names_and_origins():
    from waste_edge.serve.request_guard import SitePolicy

    loop = SitePolicy.for_bind("127.0.0.1", allow_origins=("https://dash.lan",))
    for host in ("127.0.0.1:8080", "localhost:8080", "LOCALHOST.", "[::1]:8080", "10.0.0.5", "127.0.0.1"):
        assert loop.host_refusal(_h(host=host)) is None, host
    for host in ("evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io", "[::1", "a b", "x:y"):
        assert loop.host_refusal(_h(host=host)) is not None, host
    assert SitePolicy.for_bind("127.0.0.1", allow_hosts=("*",)).host_refusal(_h(host="anything.example")) is None
    assert SitePolicy.for_bind("0.0.0.0", allow_hosts=("bin3.lan",)).host_refusal(_h(host="bin3.lan:8080")) is None
    own = dict(host="127.0.0.1:8080")
    assert loop.cross_site_refusal(_h(**own)) is None  # curl: neither header
    assert loop.cross_site_refusal(_h(**own, origin="http://127.0.0.1:8080", sec_fetch_site="same-origin")) is None
    assert loop.cross_site_refusal(_h(host="127.0.0.1", origin="http://127.0.0.1:80")) is None
    assert loop.cross_site_refusal(_h(**own, origin="https://dash.lan", sec_fetch_site="cross-site")) is None
    for bad in (dict(origin="http://evil.example"), dict(origin="null"), dict(origin="http://127.0.0.1:8081"), dict(sec_fetch_site="cross-site"),
                dict(sec_fetch_site="same-site"), dict(origin="ftp://127.0.0.1:8080"), dict(origin="http://[::1")):
        assert loop.cross_site_refusal(_h(**own, **bad)) is not None, bad


def test_token_sources(tmp_path):
    from waste_edge.serve.auth import resolve_token

    good = tmp_path / "token"
    good.write_text("0123456789abcdef0123\n")
    good.chmod(0o600)
    assert resolve_token(None, good, {}) == ("0123456789abcdef0123", [])
    good.chmod(0o644)
    token, warnings = resolve_token(None, good, {})
    assert token == "0123456789abcdef0123" and "readable by other users" in warnings[0]
    token, warnings = resolve_token("0123456789abcdef0123", None, {})
    assert token and "visible to every local user" in warnings[0]
    assert resolve_token(None, None, {"WASTE_EDGE_TOKEN": " 0123456789abcdef0123 "}) == ("0123456789abcdef0123", [])
    assert resolve_token(None, None, {}) == (None, [])
    assert "at least 16" in resolve_token(None, None, {"WASTE_EDGE_TOKEN": "short"})[1][0]
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_text("x" * 10_000)
    (tmp_path / "spaces").write_text("two words")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "latin").write_bytes(b"\xff\xfe")
    for bad in ("fifo", "big", "spaces", "empty", "latin", "missing", "."):
        with pytest.raises(WasteEdgeError):
            resolve_token(None, tmp_path / bad, {})
    with pytest.raises(WasteEdgeError, match="not both"):
        resolve_token("a" * 20, good, {})


def test_models_folder_lists_only_regular_model_files(tmp_path):
    from waste_edge.serve.catalogue import CatalogueError, ModelCatalogue

    folder = tmp_path / "models"
    startup = make_fused_model(tmp_path / "start.onnx", channel_order="BGR")
    a = make_fused_model(folder / "a.onnx", channel_order="BGR", scale=20.0)
    os.symlink(startup, folder / "link.onnx")
    (folder / ".hidden.onnx").write_bytes(a.read_bytes())
    (folder / "dir.onnx").mkdir()
    (folder / "notes.txt").write_text("x")
    cat = ModelCatalogue(folder, startup)
    assert [(e.name, e.origin) for e in cat.entries()] == [("a.onnx", "folder"), ("start.onnx", "startup")]
    entry = cat.find(sha256=cat.entries()[0].sha256.upper())
    assert entry.path == a
    with pytest.raises(CatalogueError):
        cat.find(name="link.onnx")
    path, sha, created = cat.store_upload(io.BytesIO(a.read_bytes()), limit=10**6)
    assert (path, created) == (a, False)  # the same bytes as a listed model: that model
    path, sha, created = cat.store_upload(io.BytesIO(b"new bytes"), limit=10**6)
    assert created and path.name == f"upload-{sha[:12]}.onnx" and path.read_bytes() == b"new bytes"
    with pytest.raises(CatalogueError) as e:
        cat.store_upload(io.BytesIO(b"x" * 100), limit=10)
    assert e.value.status == 413
    assert not [p for p in folder.iterdir() if p.name.startswith(".upload")]
    first = cat.adapted_path(folder / "m-adapted-20250101-000000.onnx")
    first.write_bytes(b"")
    second = cat.adapted_path(folder / "m.onnx")
    assert first.name.startswith("m-adapted-") and second != first and not second.exists()
    with pytest.raises(CatalogueError) as e:
        ModelCatalogue(None, startup).require_folder()
    assert e.value.status == 409


def test_models_the_service_made_are_pruned_to_the_newest(tmp_path):
    from waste_edge.serve.catalogue import ModelCatalogue

    folder = tmp_path / "models"
    folder.mkdir()
    startup = make_fused_model(tmp_path / "start.onnx", channel_order="BGR")
    made = []
    for i in range(6):
        p = folder / (f"upload-{i:012x}.onnx" if i % 2 else f"m-adapted-20260101-00000{i}.onnx")
        p.write_bytes(f"model {i}".encode())
        p.with_name(p.stem + ".rehearsal.npz").write_bytes(b"r")
        os.utime(p, ns=(i * 10**9, i * 10**9))
        made.append(p)
    (folder / "by-hand.onnx").write_bytes(b"kept")
    cat = ModelCatalogue(folder, startup, keep=2)
    serving = cat.find(name=made[0].name).sha256  # the oldest is serving: it stays
    removed = cat.prune(serving)
    assert sorted(removed) == sorted(p.name for p in made[1:4])
    assert sorted(p.name for p in folder.glob("*.onnx")) == sorted(["by-hand.onnx", made[0].name, made[4].name, made[5].name])
    assert not (folder / (made[1].stem + ".rehearsal.npz")).exists() and (folder / (made[5].stem + ".rehearsal.npz")).exists()


def test_fd_limit_is_raised_or_the_cap_lowered(monkeypatch):
    from waste_edge.serve import limits as L

    state = {"soft": 256, "hard": 4096}
    monkeypatch.setattr(L.resource, "getrlimit", lambda _r: (state["soft"], state["hard"]))
    monkeypatch.setattr(L.resource, "setrlimit", lambda _r, v: state.update(soft=v[0]))
    assert L.raise_fd_limit(L.HttpLimits(max_connections=500)).max_connections == 500 and state["soft"] == 500 + L.FD_RESERVE
    state.update(soft=256, hard=900)
    lowered = L.raise_fd_limit(L.HttpLimits(max_connections=500))
    assert lowered.max_connections == 900 - L.FD_RESERVE and state["soft"] == 900


def test_a_model_that_answers_nan_is_refused_before_it_serves(tmp_path):
    from waste_edge.runtime.classifier import Classifier, NonFiniteOutputError
    from waste_edge.runtime.model_check import ModelCheckError
    from waste_edge.serve.model_holder import ModelHolder, load_model

    with pytest.raises(ModelCheckError, match="non-finite"):
        load_model(make_fused_model(tmp_path / "nan.onnx", channel_order="BGR", scale=float("nan")), "cpu", 1)
    holder = ModelHolder(load_model(make_fused_model(tmp_path / "ok.onnx", channel_order="BGR"), "cpu", 1), backend="cpu", threads=1)
    sha = holder.current.sha256
    with pytest.raises(ModelCheckError):
        holder.swap(make_fused_model(tmp_path / "inf.onnx", channel_order="BGR", scale=1e300))
    assert holder.current.sha256 == sha and holder.swaps == 0
    warm = np.full((8, 8, 3), (40, 90, 210), np.uint8)
    with Classifier(make_fused_model(tmp_path / "nanwarm.onnx", channel_order="BGR", nan_above=150), "cpu", threads=1) as clf:
        with pytest.raises(NonFiniteOutputError):  # at run time: an error, never argmax(NaN) = "B"
            clf.predict(warm, "BGR")
        assert clf.predict(warm[..., ::-1].copy(), "BGR").label == "N"
    holder.note_failure(sha, "NaN")
    assert holder.problems() and "NaN" in holder.problems()[0]
    holder.note_success(sha)
    assert holder.problems() == []
    holder.close()
    assert stat.S_ISREG(os.stat(tmp_path / "ok.onnx").st_mode)
