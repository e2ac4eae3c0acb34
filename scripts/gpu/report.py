#!/usr/bin/env python3
"""The two ends of scripts/gpu_check.sh: `--probe FILE` records the machine (CUDA devices, libraries), `--out DIR`
gathers pytest -m gpu and every check_*.py result into DIR/report.json and DIR/report.md.

Standard library only (torch, onnxruntime, tensorrt are probed, never required), so it runs on any CUDA box.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

# What a machine of this kind (CUDA + PyTorch + CPU onnxruntime, no TensorRT, no onnxruntime-gpu) cannot test.
MACHINE_GAPS = {
    "tensorrt": "TensorRT engine build (Polygraphy EngineBytesFromNetwork), INT8 calibration and the TrtRunner backend: TensorRT is not installed",
    "onnxruntime-gpu": "ONNX Runtime CUDA / TensorRT execution providers (backend cuda / tensorrt for .onnx): onnxruntime-gpu is not installed",
}


def probe() -> dict:
    env: dict = {"python": sys.version.split()[0], "platform": platform.platform(), "cuda_devices": 0, "cuda_device_names": []}
    for name in ("torch", "onnx", "onnxruntime", "tensorrt", "polygraphy", "cv2", "pytest", "openvino"):
        env[f"has_{name}"] = importlib.util.find_spec(name) is not None
    if env["has_torch"]:
        try:
            import torch

            env["torch"] = torch.__version__
            env["torch_cuda"] = torch.version.cuda
            if torch.cuda.is_available():
                env["cuda_devices"] = torch.cuda.device_count()
                env["cuda_device_names"] = [torch.cuda.get_device_name(i) for i in range(env["cuda_devices"])]
                env["compute_capability"] = "%d.%d" % torch.cuda.get_device_capability(0)
        except Exception as e:  # a broken CUDA install is a finding, not a crash
            env["torch_error"] = f"{type(e).__name__}: {e}"
    if not env["cuda_devices"]:
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
            env["nvidia_smi_gpus"] = [line for line in out.splitlines() if line.startswith("GPU")]
        except (OSError, subprocess.SubprocessError):
            env["nvidia_smi_gpus"] = []
    if env["has_onnxruntime"]:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
    return env


def _pytest(out: Path) -> dict:
    rc = (out / "pytest-gpu.rc").read_text().strip() if (out / "pytest-gpu.rc").is_file() else "not run"
    result = {"name": "pytest -m gpu", "rc": rc, "passed": 0, "failed": 0, "skipped": [], "tail": ""}
    if (out / "pytest-gpu.txt").is_file():
        result["tail"] = "\n".join((out / "pytest-gpu.txt").read_text(errors="replace").splitlines()[-5:])
    xml = out / "pytest-gpu.xml"
    if xml.is_file():
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            skipped, failed = case.find("skipped"), case.find("failure") if case.find("failure") is not None else case.find("error")
            if skipped is not None:
                result["skipped"].append({"test": name, "why": skipped.get("message", "")})
            elif failed is not None:
                result["failed"] += 1
            else:
                result["passed"] += 1
    # 0 = all passed, 5 = nothing collected (no gpu tests selected); anything else is a failure
    result["status"] = {"missing": "missing", "budget": "not run"}.get(rc) or ("ok" if rc in ("0", "5") else "failed")
    return result


def _checks(out: Path) -> list[dict]:
    checks = []
    for script in sorted(Path(__file__).parent.glob("check_*.py")):
        name = script.stem[len("check_"):]
        doc_path = out / f"check_{name}.json"
        rc = (out / f"check_{name}.rc").read_text().strip() if (out / f"check_{name}.rc").is_file() else "not run"
        if rc in ("not run", "budget") and not doc_path.is_file():
            why = "the 8-minute budget was spent before it could start" if rc == "budget" else "it was not run"
            checks.append({"name": name, "status": "skipped", "figures": {}, "untested": [f"everything: {why}"], "notes": f"not run: {why}"})
            continue
        try:
            doc = json.loads(doc_path.read_text())
            if not isinstance(doc, dict) or doc.get("status") not in ("ok", "skipped", "failed"):
                raise ValueError("not the check protocol (name, status ok|skipped|failed, figures, untested, notes)")
        except (OSError, ValueError) as e:
            doc = {"name": name, "status": "failed", "figures": {}, "untested": [], "notes": f"no valid result (exit {rc}): {e}"}
        if rc not in ("0", "not run") and doc["status"] == "ok":
            doc["status"], doc["notes"] = "failed", f"exit status {rc}; " + str(doc.get("notes", ""))
        checks.append(doc)
    return checks


def write_report(out: Path, seconds: int) -> int:
    env = json.loads((out / "environment.json").read_text()) if (out / "environment.json").is_file() else {}
    pytest_result = _pytest(out)
    checks = _checks(out)
    untested = []
    if not env.get("cuda_devices"):
        untested.append("everything that needs a GPU: no CUDA GPU was found on this machine (torch.cuda.is_available() is False)")
    if not env.get("has_tensorrt"):
        untested.append(MACHINE_GAPS["tensorrt"])
    if "CUDAExecutionProvider" not in env.get("onnxruntime_providers", []):
        untested.append(MACHINE_GAPS["onnxruntime-gpu"])
    if pytest_result["status"] == "missing":
        untested.append("pytest -m gpu: pytest is not installed (bring its wheels with WHEELS=DIR)")
    if pytest_result["status"] == "not run":
        untested.append("pytest -m gpu: the 8-minute budget was spent before it could start")
    untested += [f"{s['test']}: {s['why']}" for s in pytest_result["skipped"]]
    for c in checks:
        untested += [f"{c['name']}: {u}" for u in c.get("untested", [])]
    failed = pytest_result["status"] == "failed" or any(c["status"] == "failed" for c in checks)
    report = {"status": "failed" if failed else "ok", "seconds": seconds, "environment": env, "pytest": pytest_result,
              "checks": checks, "untested": untested}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    gpu = ", ".join(env.get("cuda_device_names", [])) or "NONE FOUND"
    lines = [f"# GPU check: {report['status'].upper()} ({seconds} s)", "",
             f"- GPU: {gpu}" + (f" (compute capability {env['compute_capability']})" if env.get("compute_capability") else ""),
             f"- torch {env.get('torch', 'absent')} (CUDA {env.get('torch_cuda')}), onnxruntime {env.get('onnxruntime', 'absent')} "
             f"{env.get('onnxruntime_providers', [])}, TensorRT {'present' if env.get('has_tensorrt') else 'absent'}", "",
             "| what | status | figures | notes |", "| --- | --- | --- | --- |",
             f"| pytest -m gpu | {pytest_result['status']} | passed {pytest_result['passed']}, failed {pytest_result['failed']}, "
             f"skipped {len(pytest_result['skipped'])} | exit {pytest_result['rc']} |"]
    for c in checks:
        figs = ", ".join(f"{k} {v}" for k, v in (c.get("figures") or {}).items())
        lines.append(f"| check {c['name']} | {c['status']} | {figs} | {str(c.get('notes', '')).replace('|', '/')} |")
    lines += ["", "## Not tested here, and why", ""] + [f"- {u}" for u in untested] + [""]
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe", type=Path, default=None, metavar="FILE", help="write the environment probe to FILE")
    ap.add_argument("--out", type=Path, default=None, metavar="DIR", help="gather the results in DIR into report.json / report.md")
    ap.add_argument("--seconds", type=int, default=0, help="wall time of the whole check, for the report")
    args = ap.parse_args(argv)
    if args.probe:
        args.probe.write_text(json.dumps(probe(), indent=2) + "\n")
        return 0
    if args.out:
        return write_report(args.out, args.seconds)
    ap.error("give --probe FILE or --out DIR")
    return 2


if __name__ == "__main__":
    sys.exit(main())
