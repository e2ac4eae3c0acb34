"""What the scale options do without a Ray cluster: fast failures, shard bookkeeping, devices, loaders."""

import json
import sys
import time

import numpy as np
import pytest

from tests.helpers import make_kaggle_dataset, save_image, synthetic_rgb
from waste_edge.cli import main

pytestmark = pytest.mark.timeout(120)


def test_unreachable_ray_address_fails_in_seconds_and_writes_nothing(tmp_path, capsys):
    pytest.importorskip("ray")
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    save_image(tmp_path / "in" / "a.png", synthetic_rgb("B", 1))
    t0 = time.monotonic()
    rc = main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "p.csv"), "--ray", f"127.0.0.1:{port}", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and time.monotonic() - t0 < 30
    assert f"error: no Ray cluster answers at 127.0.0.1:{port}" in err and err.count("error:") == 1
    assert not (tmp_path / "p.csv").exists()  # the output is opened only once the cluster answered


def test_missing_ray_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if `pip install 'waste-edge[ray]'` never ran
    save_image(tmp_path / "in" / "a.png", synthetic_rgb("B", 1))
    rc = main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "p.csv"), "--ray", "--quiet"])
    assert rc == 1 and "error: --ray needs Ray Data: pip install 'waste-edge[ray]'" in capsys.readouterr().err


def test_ray_flag_does_not_swallow_the_first_source(tmp_path, capsys):
    """`predict --ray photos/`: --ray's optional value is a source here. Only input errors: no cluster is needed."""
    pytest.importorskip("pyarrow")
    (tmp_path / "empty").mkdir()
    rc = main(["predict", "--ray", str(tmp_path / "empty"), str(tmp_path / "gone.jpg"), "--out", str(tmp_path / "p.csv"), "--quiet"])
    assert rc == 1
    rows = (tmp_path / "p.csv").read_text(encoding="utf-8").splitlines()
    assert rows[1].endswith("folder contains no images or videos") and rows[2].endswith("file not found")
    assert main(["predict", "--ray", "--quiet"]) == 2
    assert "give at least one SOURCE" in capsys.readouterr().err


def test_shard_store_skips_done_shards_refuses_other_jobs_and_removes_only_its_files(tmp_path):
    pa = pytest.importorskip("pyarrow")
    from waste_edge.scale.cluster import RayError
    from waste_edge.scale.shards import ShardStore

    store = ShardStore(tmp_path / "s", "job-a", 3)
    store.write(0, pa.table({"x": [1, 2]}))
    store.path(2).write_bytes(b"PAR1 torn")  # a damaged part: redone, not trusted
    assert store.done() == {0}
    assert ShardStore(tmp_path / "s", "job-a", 3).done() == {0}  # the same job again: resumes
    assert store.read(0).column("x").to_pylist() == [1, 2]
    with pytest.raises(RayError, match="another job"):
        ShardStore(tmp_path / "s", "job-b", 3)
    (tmp_path / "s" / "notes.txt").write_text("the user's own file")
    store.remove()
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["notes.txt"]


def test_torch_device_errors_are_one_line(tmp_path, capsys):
    import torch

    data = make_kaggle_dataset(tmp_path / "data", n_per_class=2)
    base = ["train", "linear", "--data", str(data), "--encoder", "effnet-lite0/none", "--cache", str(tmp_path / "c")]
    if not torch.cuda.is_available():
        assert main([*base, "--out", str(tmp_path / "r1"), "--torch-device", "cuda"]) == 1
        assert "error: --torch-device cuda: torch sees no CUDA GPU" in capsys.readouterr().err
        assert main([*base, "--out", str(tmp_path / "r2"), "--amp"]) == 1
        assert "error: --amp needs a CUDA GPU" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "r3"), "--torch-device", "cpu", "--amp"]) == 1
    assert "on --torch-device cpu it does not apply" in capsys.readouterr().err


def test_dataloader_processes_give_the_thread_loaders_features(tmp_path):
    """The CUDA path's loader (DataLoader worker processes, same batches) runs here on CPU: same features, same errors."""
    from waste_edge.data.discovery import discover
    from waste_edge.train.embeddings import TorchRunner, extract_embeddings
    from waste_edge.train.encoders import create_encoder

    data = make_kaggle_dataset(tmp_path / "data", n_per_class=2, splits=("TRAIN",))
    (data / "TRAIN" / "N" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n torn")
    samples = discover(data).samples
    enc = create_encoder("effnet-lite0/none")
    got = {}
    for loader in ("threads", "processes"):
        got[loader] = extract_embeddings(enc, samples, batch_size=2, cache_dir=tmp_path / loader, progress=False,
                                         runner=TorchRunner("cpu", workers=2, loader=loader))
    a, b = got["threads"], got["processes"]
    assert [s.path for s in a.samples] == [s.path for s in b.samples] and len(a.samples) == 4
    assert [(s.path.name, why) for s, why in a.failed] == [(s.path.name, why) for s, why in b.failed] == [("broken.png", b.failed[0][1])]
    np.testing.assert_array_equal(a.features, b.features)


def test_amp_features_have_their_own_cache_key():
    from waste_edge.train.embeddings import cache_key
    from waste_edge.train.encoders import create_encoder

    enc = create_encoder("effnet-lite0/none")
    assert cache_key(enc, "fp32") == enc.cache_key()
    assert cache_key(enc, "amp-fp16") != enc.cache_key()


def test_gpu_check_script_says_skipped_without_cuda(tmp_path):
    import subprocess

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the script would measure, not skip")
    from tests.helpers import REPO

    out = tmp_path / "extraction.json"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu" / "check_extraction.py"), "--json", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    doc = json.loads(out.read_text())
    assert doc["name"] == "extraction" and doc["status"] == "skipped" and "CUDA" in doc["notes"]
    assert set(doc) == {"name", "status", "figures", "untested", "notes"} and doc["figures"] == {}


def _silent_listener():
    """A TCP port that accepts connections and never answers: a web server's port, a dead head's reused port."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


@pytest.mark.parametrize("how", ["flag", "RAY_ADDRESS"])
def test_a_port_that_is_not_a_ray_head_fails_in_seconds(how, tmp_path, monkeypatch, capsys):
    """Ray's own retries hung past 120 s (and ignored SIGTERM) on a port where something else listens."""
    pytest.importorskip("ray")
    listener = _silent_listener()
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    save_image(tmp_path / "in" / "a.png", synthetic_rgb("B", 1))
    argv = ["predict", str(tmp_path / "in"), "--out", str(tmp_path / "p.csv"), "--quiet", "--ray"]
    if how == "flag":
        argv.append(address)
    else:
        monkeypatch.setenv("RAY_ADDRESS", address)
    t0 = time.monotonic()
    try:
        rc = main(argv)
    finally:
        listener.close()
    err = capsys.readouterr().err
    assert rc == 1 and time.monotonic() - t0 < 30
    assert f"error: no Ray cluster answers at {address}" in err and "not a Ray head node" in err and err.count("error:") == 1
    assert not (tmp_path / "p.csv").exists()


def test_root_cause_reads_the_workers_error_inside_rays_wrappers():
    from waste_edge.scale.jobs import root_cause

    class ActorDiedError(Exception):
        pass

    class SystemException(Exception):
        pass

    inner = ActorDiedError("The actor died because of an error raised in its creation task\n  File \"x.py\", line 1\n"
                           "waste_edge.runtime.backends.base.BackendError: backend 'cuda' is not available here\n")
    outer = SystemException("")
    outer.__cause__ = inner
    assert root_cause(outer) == "BackendError: backend 'cuda' is not available here"
    assert root_cause(ValueError("bad\nlast line")) == "ValueError: last line"


@pytest.mark.slow
def test_an_actor_that_fails_is_one_line_and_exit_1_with_rays_output_in_its_log(tmp_path):
    """Ray's error lines and tracebacks reached the user (on stdout too, the CSV's stream). An actor whose model cannot
    load: exit 1, one `error:` line naming the worker's error, stdout only the table, Ray's output in its log file."""
    pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    import os
    import subprocess

    import onnx
    from onnx import helper

    from tests.helpers import REPO
    from tests.runtime.tiny_model import make_fused_model

    model = make_fused_model(tmp_path / "m.onnx")
    proto = onnx.load(str(model))
    proto.graph.node.append(helper.make_node("NoSuchOp", ["probabilities"], ["junk"], domain="no.such.domain"))
    onnx.save(proto, str(model))  # metadata readable (the driver), the graph is not (each actor's session)
    save_image(tmp_path / "in" / "a.png", synthetic_rgb("B", 1))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WASTE_EDGE_CACHE": str(tmp_path / "cache")}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-m", "waste_edge.cli", "predict", str(tmp_path / "in"), "--model", str(model), "--ray", "local",
                        "--quiet"], capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 1, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "the Ray job failed: OrtLoadError" in errors[0] and "no.such.domain" in errors[0], r.stderr
    assert "Traceback" not in r.stderr and "(raylet)" not in r.stderr and "core_worker" not in r.stderr, r.stderr
    assert r.stdout.splitlines() == ["path,frame,label,confidence,p_B,p_N,error"]
    log = tmp_path / "cache" / "scale" / "ray-output.log"
    assert log.is_file() and "Traceback" in log.read_text(errors="replace")


def test_rays_loggers_write_where_they_did_once_its_output_log_is_closed(tmp_path, capsys):
    """`route_ray_loggers` points Ray's handlers at the job's log; the log closes with the job, and Ray logs later
    (its shutdown at exit, a second job in one process): each such line was a 'Logging error' traceback on a
    closed file. After the block Ray's handlers, our own and anything holding the routed sys.stderr write to the
    stream they wrote to before."""
    import logging

    from waste_edge.scale.cluster import ray_output_to_log, route_ray_loggers

    ray_logger = logging.getLogger("ray")
    propagate = ray_logger.propagate
    handler = logging.StreamHandler(sys.stderr)  # what ray.init sets up
    ray_logger.addHandler(handler)
    ray_logger.setLevel(logging.INFO)
    before_err = sys.stderr
    try:
        with ray_output_to_log(tmp_path / "ray-output.log") as log_file:
            route_ray_loggers(log_file)
            routed_err = sys.stderr
            ray_logger.info("inside the job")
        ray_logger.info("after the job")
        print("held on to", file=routed_err)
        assert handler.stream is before_err and sys.stderr is before_err and ray_logger.propagate == propagate
    finally:
        ray_logger.removeHandler(handler)
        ray_logger.propagate = propagate
        ray_logger.setLevel(logging.NOTSET)
    err = capsys.readouterr().err
    assert "inside the job" in (tmp_path / "ray-output.log").read_text() and "inside the job" not in err
    assert "after the job" in err and "held on to" in err and "Logging error" not in err and "closed file" not in err
