"""`waste-edge bench` end to end on tiny models: report structure, the reference pairing, failures that do not stop
the run, the Markdown / PNG / JSON outputs, the camera-loop and profile sections, the accuracy column."""

from __future__ import annotations

import contextlib
import io
import json
import platform
import statistics

import numpy as np
import pytest

from tests.helpers import make_kaggle_dataset
from tests.runtime.tiny_model import write_sidecar
from waste_edge.cli import main

SCHEMA = ("model", "variant", "backend", "batch", "status", "error", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput",
          "load_s", "size_mb", "peak_rss_mb", "speedup_vs_reference")
QUICK = ["--batches", "1,2", "--frame", "96x64", "--iters", "3", "--warmup", "1", "--rounds", "2", "--quiet"]


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["bench", *args])
        except SystemExit as e:  # a usage error, from argparse
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_run, tiny_models):
    out = tmp_path_factory.mktemp("bench-out")
    code, stdout, stderr = run_cli([
        "--model", str(tiny_models["fp32"]), "--model", str(tiny_models["int8"]), "--reference", str(tiny_run),
        "--backends", "cuda,tensorrt,cpu", *QUICK, "--camera", "--camera-frames", "12", "--profile",
        "--json", str(out / "bench.json"), "--md", str(out / "bench.md"), "--plot", str(out / "bench.png"),
    ])
    assert code == 0, stderr
    return {"out": out, "report": json.loads((out / "bench.json").read_text()), "stdout": stdout}


def rows_of(report, **match):
    return [r for r in report["rows"] if all(r[k] == v for k, v in match.items())]


def test_report_has_one_row_per_combination_with_the_schema(full_run):
    report = full_run["report"]
    assert set(report) >= {"machine", "rows"}
    assert report["machine"]["logical_cores"] >= 1 and report["machine"]["cpu"]
    rows = report["rows"]
    # reference x 2 batches + 2 models x 3 backends x 2 batches
    assert len(rows) == 2 + 2 * 3 * 2
    for r in rows:
        assert all(k in r for k in SCHEMA), sorted(set(SCHEMA) - set(r))
    combos = {(r["model"], r["backend"], r["batch"]) for r in rows}
    assert len(combos) == len(rows)


def test_gpu_backends_fail_with_a_reason_and_cpu_rows_still_run(full_run):
    report = full_run["report"]
    for backend in ("cuda", "tensorrt"):
        for r in rows_of(report, backend=backend):
            assert r["status"] == "failed"
            assert backend in r["error"] and "not available" in r["error"]
            assert r["p50_ms"] is None and r["speedup_vs_reference"] is None
    cpu = [r for r in rows_of(report, backend="cpu") if r["variant"] != "reference"]
    assert len(cpu) == 4
    for r in cpu:
        assert r["status"] == "ok" and r["error"] is None
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["throughput"] > 0 and r["load_s"] > 0 and r["size_mb"] > 0
        assert r["iters"] == 3 * 2 and r["rounds"] == 2


def test_reference_row_and_speedups_are_median_paired_round_ratios(full_run):
    report = full_run["report"]
    refs = rows_of(report, variant="reference")
    assert [r["batch"] for r in refs] == [1, 2]
    for ref in refs:
        assert ref["status"] == "ok", ref["error"]
        assert ref["speedup_vs_reference"] == 1.0
        assert ref["size_mb"] > 1  # a real (random-weight) EfficientNet-Lite0 in torch
        for r in rows_of(report, backend="cpu", batch=ref["batch"]):
            if r["variant"] == "reference":
                continue
            expected = statistics.median(a / b for a, b in zip(ref["round_ms"], r["round_ms"]))
            assert r["speedup_vs_reference"] == pytest.approx(expected)
            assert r["reference"] == ref["model"]
            # a mean-colour graph is far faster than a CNN in torch: the ratio says so
            assert r["speedup_vs_reference"] > 1


def test_throughput_is_batch_over_median_round(full_run):
    for r in rows_of(full_run["report"], status="ok"):
        assert r["throughput"] == pytest.approx(1000 * r["batch"] / statistics.median(r["round_ms"]))


def test_peak_rss_is_measured_per_target_in_its_own_process(full_run):
    report = full_run["report"]
    ref = rows_of(report, variant="reference")[0]
    model = rows_of(report, variant="fp32", backend="cpu")[0]
    assert model["peak_rss_mb"] > 10
    # The reference process holds torch and a CNN; the fused one only ONNX Runtime and a tiny graph.
    assert ref["peak_rss_mb"] > model["peak_rss_mb"] + 50


def test_markdown_and_plot_are_written(full_run):
    out = full_run["out"]
    md = (out / "bench.md").read_text()
    assert "| Model | Variant | Backend | Batch | Status |" in md
    assert "failed [1]" in md and "[1] backend 'cuda' is not available here" in md
    table = md.split("| Model | Variant | Backend | Batch | Status |", 1)[1].split("\n\n", 1)[0]
    assert table.count("\n| tiny-fp32.onnx | fp32 |") == 6 and table.count("\n| lite0-random | reference | cpu |") == 2
    assert "Camera loop" in md and "ONNX Runtime profile" in md
    assert md in full_run["stdout"]
    png = (out / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_camera_loop_overhead_is_reported_per_model(full_run):
    cams = full_run["report"]["camera"]
    assert {c["model"] for c in cams} == {"tiny-fp32.onnx", "tiny-int8.onnx"}
    for c in cams:
        assert c["status"] == "ok", c["error"]
        assert c["frames"] == 12 and c["frame_size"] == "96x64"
        assert c["loop_fps"] > 0 and c["pure_fps"] > 0
        assert c["overhead"] == pytest.approx(statistics.median(d["overhead"] for d in c["rounds_detail"]), abs=1e-3)


def test_profile_names_the_graph_ops(full_run):
    profiles = full_run["report"]["profiles"]
    assert {(p["model"], p["batch"]) for p in profiles} == {(m, b) for m in ("tiny-fp32.onnx", "tiny-int8.onnx") for b in (1, 2)}
    ops = {o["op"] for o in profiles[0]["ops"]}
    assert {"ReduceMean", "Gemm", "Softmax"} <= ops
    assert sum(o["share"] for o in profiles[0]["ops"]) == pytest.approx(1.0, abs=1e-6)
    stages = {s["stage"]: s for s in profiles[0]["stages"]}  # the tiny model's nodes carry the export's pre/ and head/ prefixes
    assert stages["preprocessing"]["share"] > 0 and stages["head"]["share"] > 0
    assert sum(s["share"] for s in stages.values()) == pytest.approx(1.0, abs=1e-6)


def test_broken_files_and_engines_become_rows_not_crashes(tmp_path, tiny_run, tiny_models):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 64)
    write_sidecar(engine)
    code, _, stderr = run_cli([
        "--model", str(broken), "--model", str(engine), "--model", str(tiny_models["fp32"]), "--model", str(tmp_path / "missing.onnx"),
        "--backends", "cpu,tensorrt", "--no-memory", "--json", str(tmp_path / "r.json"), *QUICK,
    ])
    assert code == 0, stderr
    report = json.loads((tmp_path / "r.json").read_text())
    status = {(r["model"], r["backend"], r["batch"]): (r["status"], r["error"]) for r in report["rows"]}
    for batch in (1, 2):
        s, err = status[("broken.onnx", "cpu", batch)]
        assert s == "failed" and "cannot load" in err
        s, err = status[("model.engine", "cpu", batch)]
        assert s == "skipped" and "tensorrt" in err
        assert status[("model.engine", "tensorrt", batch)][0] == "failed"
        assert status[("tiny-fp32.onnx", "cpu", batch)] == ("ok", None)
        assert status[("tiny-fp32.onnx", "tensorrt", batch)][0] == "failed"
        assert status[("missing.onnx", "cpu,tensorrt", batch)][0] == "failed"


def batch_one_only(path: Path, like: Path) -> Path:
    """A copy of the tiny model whose graph only runs on batch 1 (a Reshape to [1, 3]): batch 2 fails inside ORT."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(like))
    g = model.graph
    mean = next(n for n in g.node if n.op_type == "ReduceMean")
    gemm = next(n for n in g.node if n.op_type == "Gemm")
    g.initializer.append(numpy_helper.from_array(np.array([1, 3], dtype=np.int64), "one_by_three"))
    g.node.insert(list(g.node).index(mean) + 1, helper.make_node("Reshape", [mean.output[0], "one_by_three"], ["mean_b1"]))
    gemm.input[0] = "mean_b1"
    onnx.save(model, str(path))
    return path


def test_a_failure_inside_one_batch_fails_only_that_row(tmp_path, tiny_models):
    from waste_edge.bench.harness import BenchConfig, run_bench

    fragile = batch_one_only(tmp_path / "tiny-b1.onnx", tiny_models["int8"])
    cfg = BenchConfig(models=[tiny_models["fp32"], fragile], batches=[1, 2], frame=(96, 64), warmup=1, iters=2, rounds=2,
                      threads=1, memory=False, progress=False)
    report = run_bench(cfg)
    status = {(r.model, r.batch): (r.status, r.error) for r in report.rows}
    assert status[("tiny-b1.onnx", 2)][0] == "failed" and "Reshape" in status[("tiny-b1.onnx", 2)][1]
    assert status[("tiny-b1.onnx", 1)] == ("ok", None)
    assert status[("tiny-fp32.onnx", 1)] == ("ok", None) and status[("tiny-fp32.onnx", 2)] == ("ok", None)
    assert all(r.speedup_vs_reference is None for r in report.rows)  # no reference given


def test_a_worker_that_dies_is_reported_not_waited_for(tiny_models):
    from waste_edge.bench.processes import Worker, WorkerDied
    from waste_edge.bench.frames import synthetic_frames

    worker = Worker({"kind": "model", "path": str(tiny_models["fp32"]), "backend": "cpu", "threads": 1})
    try:
        info = worker.ask("load", frames=synthetic_frames(1, 32, 24), first_batch=1)
        assert info["pid"] == worker.pid and info["variant"] == "fp32"
        worker.process.kill()
        with pytest.raises(WorkerDied, match="exited"):
            worker.ask("time", batch=1, iters=1)
    finally:
        worker.close()


def test_nothing_measurable_exits_1_but_still_writes_the_report(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"junk")
    code, _, stderr = run_cli(["--model", str(broken), "--no-memory", "--json", str(tmp_path / "r.json"), *QUICK])
    assert code == 1 and "no combination could be measured" in stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rows"] and all(r["status"] == "failed" for r in report["rows"])


def test_without_model_the_default_model_is_benchmarked(monkeypatch, tmp_path, tiny_models, capsys):
    import waste_edge.runtime.model_path as model_path

    monkeypatch.setattr(model_path, "default_model_path", lambda: tiny_models["int8"])
    code, _, stderr = run_cli(["--no-memory", "--json", str(tmp_path / "r.json"), *QUICK])
    assert code == 0, stderr
    assert {r["model"] for r in json.loads((tmp_path / "r.json").read_text())["rows"]} == {"tiny-int8.onnx"}

    monkeypatch.setattr(model_path, "default_model_path", lambda: None)
    assert main(["bench", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no model given") and "\n" not in err


@pytest.mark.parametrize("args, message", [(["--batches", "0"], "expected integers from 1 to"), (["--backends", "gpu"], "backends are"),
                                           (["--frame", "640by480"], "WIDTHxHEIGHT")])
def test_bad_options_are_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--model", "m.onnx", *args])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_accuracy_column_with_data(tmp_path, tiny_run, tiny_models):
    data = make_kaggle_dataset(tmp_path / "data", n_per_class=3, splits=("TRAIN", "TEST"))
    code, _, stderr = run_cli(["--model", str(tiny_models["fp32"]), "--reference", str(tiny_run), "--data", str(data),
                               "--no-memory", "--json", str(tmp_path / "r.json"), "--md", str(tmp_path / "r.md"), *QUICK])
    assert code == 0, stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["accuracy"]["images"] == 6
    for r in report["rows"]:
        # the tiny model tells warm (B) from cool (N) synthetic pictures, read in the right channel order
        if r["variant"] == "fp32":
            assert r["accuracy"] == 1.0
        else:
            assert 0.0 <= r["accuracy"] <= 1.0
    assert "| Accuracy |" in (tmp_path / "r.md").read_text()


def test_session_config_lever_reaches_the_models(tmp_path, tiny_models):
    code, _, stderr = run_cli(["--model", str(tiny_models["fp32"]), "--session-config", "session.intra_op.allow_spinning=0",
                               "--no-memory", "--json", str(tmp_path / "r.json"), *QUICK])
    assert code == 0, stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["session_config"] == {"session.intra_op.allow_spinning": "0"}
    assert all(r["status"] == "ok" for r in report["rows"])
    code, _, stderr = run_cli(["--model", str(tiny_models["fp32"]), "--session-config", "no-equals-sign", *QUICK])
    assert code == 2 and "KEY=VALUE" in stderr


def test_every_target_runs_in_its_own_process_at_its_own_defaults(full_run):
    import os

    report = full_run["report"]
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    pids = {(r["model"], r["backend"]): r["settings"]["worker_pid"] for r in ok}
    assert len(set(pids.values())) == len(pids) == 3 and os.getpid() not in pids.values()
    from waste_edge.bench.machine import openmp_env

    policy = openmp_env()
    for r in ok:
        s = r["settings"]
        assert s["openmp_env"] == policy  # the harness sets nothing process-wide for anyone
        # every timed process settles its allocator the same way (the row says so)
        assert s["allocator"] == ("glibc, settled (one 32 MB block freed before timing)" if platform.libc_ver()[0] == "glibc" else "untouched (not glibc)")
        if r["variant"] == "reference":
            assert s["runtime"] == "torch" and s["threads_source"] == "PyTorch default" and s["threads"] >= 1
        else:
            assert s["runtime"] == "onnxruntime" and s["threads"] == "default (one per physical core)"
            assert s["graph_optimization"] == "ORT_ENABLE_ALL" and s["session_config"] == {}
    md = (full_run["out"] / "bench.md").read_text()
    assert "[s1] torch; threads" in md and "[s2] onnxruntime; threads default" in md and "OpenMP env" in md


def test_reference_row_agrees_with_the_pipeline_timed_alone(tmp_path, tiny_run, tiny_models):
    """The harness must not handicap the reference: its row within 10 % of the same pipeline alone in fresh processes.

    A real timing on a noisy shared host. The check times the pipeline alone in two fresh processes in the same
    rounds as the reference row (`_AloneCheck`), which removes the machine's drift; every timed process settles
    its allocator first (`settle_allocator`: without it the worker ran up to 29 % faster than a fresh process,
    and fresh processes differed by up to 20 %). Measured here since: -2.6 / +1.9 / +1.8 % (twins within 8 %).
    The verdict is on the mean deviation over fresh attempts, stopping as soon as it is within 10 % (at most
    4): a systematic handicap such as a process-wide OMP_WAIT_POLICY=PASSIVE (+40-90 %) fails every attempt. When
    all attempts miss and the load average was above 1.5x the cores, the verdict is a skip that says so."""
    import os
    import statistics

    from waste_edge.bench.harness import BenchConfig, run_bench

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    deviations, spreads, loads = [], [], [os.getloadavg()[0]]
    for _ in range(4):
        cfg = BenchConfig(models=[tiny_models["fp32"]], references=[tiny_run], batches=[1], frame=(320, 240), warmup=2, iters=6,
                          rounds=15, memory=False, progress=False, check_alone=True)
        report = run_bench(cfg)
        check = report.reference_check
        loads.append(os.getloadavg()[0])
        assert len(check) == 1 and "alone_ms" in check[0], check
        ref_row = next(r for r in report.rows if r.variant == "reference")
        assert check[0]["harness_ms"] == statistics.median(ref_row.round_ms) and len(check[0]["alone_round_ms"]) == 15
        deviations.append(check[0]["harness_over_alone"] - 1)
        spreads.append(check[0]["twin_spread"])
        if abs(statistics.mean(deviations)) <= 0.10:
            break
    message = (f"reference in the harness vs alone: {[f'{d:+.1%}' for d in deviations]} (two alone processes vs each other: "
               f"{[f'{d:+.1%}' for d in spreads]}), load average {[round(x, 1) for x in loads]} on {cores} cores")
    if abs(statistics.mean(deviations)) > 0.10 and max(loads) > 1.5 * cores:
        pytest.skip("machine oversubscribed, timing not conclusive: " + message)
    assert abs(statistics.mean(deviations)) <= 0.10, message


def test_alone_process_that_cannot_load_fails_in_one_line(tmp_path):
    """A yardstick that cannot load says why in one line (and leaves no process behind), so the check reports it."""
    from waste_edge.bench.alone import AloneProcess
    from waste_edge.errors import WasteEdgeError

    missing = tmp_path / "no-such-run"
    with pytest.raises(WasteEdgeError) as info:
        AloneProcess({"kind": "reference", "path": str(missing), "batch": 1, "frame": [64, 48], "iters": 1})
    text = str(info.value)
    assert text.startswith("the fresh process failed while loading: ") and "\n" not in text and "no-such-run" in text, text
