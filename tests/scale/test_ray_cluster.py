"""`predict --ray HOST:PORT` against a Ray cluster started with `ray start --head`, as a user would run one.

The head runs as a subprocess in a session of its own, with its own temp folder, free ports (bound to port 0
first), no dashboard, 2 CPUs and token authentication with a token of its own; the driver is the CLI in
another process that connects by address. At the end the head is sent SIGTERM (which stops what it started)
and, if anything of its session survives, that process group is killed. `ray stop` is never used: it would
stop every Ray cluster of this user on the machine.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.scale.conftest import assert_same_rows, read_csv

pytest.importorskip("ray.data")
pytest.importorskip("pyarrow")

pytestmark = pytest.mark.timeout(300)
PORT_FLAGS = ("--port", "--node-manager-port", "--object-manager-port", "--ray-client-server-port", "--dashboard-port",
              "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def stop_head(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # our own session: only what this head started
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def ray_head():
    temp = Path(tempfile.mkdtemp(prefix="we-rh-", dir="/tmp"))  # short: Ray's socket paths must stay under 107 bytes
    (temp / "token").write_text("waste-edge-test-" + os.urandom(16).hex())
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(temp / "token"), RAY_USAGE_STATS_ENABLED="0",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")  # SIGTERM: stop at once, no 30 s drain
    env.pop("RAY_ADDRESS", None)
    ports = free_ports(len(PORT_FLAGS) + 12)
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus=2", "--num-gpus=0",
           "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}", f"--object-store-memory={100 * 2**20}",
           *(f"{flag}={port}" for flag, port in zip(PORT_FLAGS, ports)),
           "--worker-port-list=" + ",".join(map(str, ports[len(PORT_FLAGS):]))]
    log = open(temp / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while not (temp / "ray_current_cluster").is_file():  # written once the head is up
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("ray start --head did not come up:\n" + (temp / "head.log").read_text()[-3000:])
            time.sleep(0.5)
        yield f"127.0.0.1:{ports[0]}", env
    finally:
        stop_head(proc)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_predict_joins_a_cluster_by_address_and_matches_single_process(ray_head, predict_inputs, tmp_path):
    from waste_edge.runtime.classifier import Classifier
    from waste_edge.runtime.predict import run_predict

    address, env = ray_head
    with Classifier(None, "cpu") as clf:
        run_predict(clf, predict_inputs, tmp_path / "single.csv", batch_size=8, progress=False)
    out = tmp_path / "ray.csv"
    cmd = [sys.executable, "-m", "waste_edge.cli", "predict", *map(str, predict_inputs), "--out", str(out), "--batch-size", "8",
           "--backend", "cpu", "--ray", address, "--ray-workers", "2", "--quiet"]
    run = subprocess.run(cmd, env=dict(env, WASTE_EDGE_CACHE=str(tmp_path / "cache")), capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Ray cluster" in run.stderr and "2 CPUs" in run.stderr  # joined, not a cluster of its own
    assert "27 rows (24 predictions, 3 errors)" in run.stdout and "2 workers" in run.stdout
    assert_same_rows(read_csv(out), read_csv(tmp_path / "single.csv"))
