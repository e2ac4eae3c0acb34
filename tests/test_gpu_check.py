"""scripts/gpu_check.sh's parts on a machine without a GPU: the check protocol and the report say so plainly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

GPU = REPO / "scripts" / "gpu"


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(_torch_cuda(), reason="checks the no-GPU answer")
def test_preprocess_check_reports_skipped_without_a_gpu(tmp_path):
    out = tmp_path / "check_preprocess.json"
    subprocess.run([sys.executable, str(GPU / "check_preprocess.py"), "--json", str(out)], check=True, cwd=REPO, timeout=120)
    doc = json.loads(out.read_text())
    assert doc["name"] == "preprocess" and doc["status"] == "skipped"
    assert "no CUDA GPU" in doc["notes"] and doc["untested"]


def test_report_lists_what_was_not_tested_and_fails_on_a_failed_check(tmp_path):
    env = {"cuda_devices": 0, "cuda_device_names": [], "has_tensorrt": False, "onnxruntime_providers": ["CPUExecutionProvider"]}
    (tmp_path / "environment.json").write_text(json.dumps(env))
    (tmp_path / "pytest-gpu.rc").write_text("0\n")
    (tmp_path / "pytest-gpu.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.x" name="test_engine"><skipped message="needs TensorRT"/></testcase>'
        '</testsuite></testsuites>')
    (tmp_path / "check_preprocess.json").write_text(json.dumps({"name": "preprocess", "status": "skipped", "figures": {},
                                                                "untested": ["exactness on CUDA: no GPU"], "notes": "no CUDA GPU found"}))
    (tmp_path / "check_preprocess.rc").write_text("0\n")
    run = lambda: subprocess.run([sys.executable, str(GPU / "report.py"), "--out", str(tmp_path), "--seconds", "5"],  # noqa: E731
                                 capture_output=True, text=True, cwd=REPO, timeout=60)
    done = run()
    assert done.returncode == 0, done.stderr
    md = (tmp_path / "report.md").read_text()
    assert "GPU: NONE FOUND" in md and "no CUDA GPU was found" in md and "TensorRT is not installed" in md
    assert "tests.x::test_engine: needs TensorRT" in md and "preprocess: exactness on CUDA: no GPU" in md
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "ok" and report["pytest"]["skipped"][0]["why"] == "needs TensorRT"
    (tmp_path / "check_preprocess.json").write_text("{broken")  # a check that wrote no valid document has failed
    failed = run()
    assert failed.returncode == 1
    checks = {c["name"]: c for c in json.loads((tmp_path / "report.json").read_text())["checks"]}
    assert checks["preprocess"]["status"] == "failed"
    assert checks["extraction"]["status"] == "skipped" and "not run" in checks["extraction"]["notes"]  # no .rc, no document


def test_gpu_check_keeps_to_its_time_budget(tmp_path):
    """With the budget spent, pytest and the checks are not started and the report says so (the 8-minute promise)."""
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out)], env={**os.environ, "BUDGET_S": "30"},
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "pytest-gpu.rc").read_text().strip() == "budget"
    report = json.loads((out / "report.json").read_text())
    assert report["pytest"]["status"] == "not run" and report["checks"]
    assert all(c["status"] == "skipped" and "budget" in c["notes"] for c in report["checks"])
    assert "pytest -m gpu: the 8-minute budget was spent before it could start" in (out / "report.md").read_text()
