"""`waste-edge bench` end to end on tiny models: report structure, the reference pairing, failures that do not stop
the run, the Markdown / PNG / JSON outputs, the camera-loop and profile sections, the accuracy column."""

from __future__ import annotations

import contextlib
import io
import json
import statistics

import numpy as np
import pytest

from tests.helpers import make_kaggle_dataset
from tests.runtime.tiny_model import write_sidecar
from waste_edge.cli import main

SCHEMA = ("model", "variant", "backend", "batch", "status", "error", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput",
          "load_s", "size_mb", "peak_rss_mb", "speedup_vs_reference")
QUICK = ["--batch", "1,2", "--frame", "96x64", "--iters", "3", "--warmup", "1", "--rounds", "2", "--quiet"]


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["bench", *args])
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


def test_a_failure_inside_one_batch_fails_only_that_row(monkeypatch, tmp_path, tiny_models):
    from waste_edge.bench.harness import BenchConfig, run_bench
    from waste_edge.runtime.classifier import Classifier

    original = Classifier.predict_proba

    def flaky(self, frames, channel_order="BGR"):
        if "int8" in self.path.name and isinstance(frames, np.ndarray) and frames.ndim == 4 and len(frames) == 2:
            raise RuntimeError("simulated kernel failure")
        return original(self, frames, channel_order)

    monkeypatch.setattr(Classifier, "predict_proba", flaky)
    cfg = BenchConfig(models=list(tiny_models.values()), batches=[1, 2], frame=(96, 64), warmup=1, iters=2, rounds=2,
                      threads=1, memory=False, progress=False)
    report = run_bench(cfg)
    status = {(r.variant, r.batch): (r.status, r.error) for r in report.rows}
    assert status[("int8", 2)] == ("failed", "RuntimeError: simulated kernel failure")
    assert status[("int8", 1)] == ("ok", None)
    assert status[("fp32", 1)] == ("ok", None) and status[("fp32", 2)] == ("ok", None)
    assert all(r.speedup_vs_reference is None for r in report.rows)  # no reference given


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


@pytest.mark.parametrize("args, message", [(["--batch", "0"], "positive integers"), (["--backends", "gpu"], "backends are"),
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
