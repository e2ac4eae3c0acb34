"""Peak memory of one benchmark target, measured in a fresh child process.

A process's peak RSS only ever grows, so inside the benchmark (which holds the reference, every variant and
every backend at once) it cannot be attributed to one row. The figure an edge user needs is "how much RAM
does a process running only this model take": so a child process imports what the target needs, loads it,
runs a few batches of the largest batch size, and reports its own `ru_maxrss` (and, on a GPU, the device
memory `nvidia-smi` attributes to it). Run as `python -m waste_edge.bench.memory '<json spec>'`.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from typing import Any

from waste_edge.errors import WasteEdgeError


def _peak_rss_mb() -> float:
    """This process's high-water RSS. On Linux from VmHWM, which starts afresh at exec: `ru_maxrss` survives exec
    and would report the forking parent's size (the whole benchmark) instead of the child's own."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 1024.0 / 1024.0  # KiB on Linux, bytes on macOS


def gpu_memory_mb(pid: int) -> float | None:
    """Device memory used by `pid` according to nvidia-smi; None without a GPU (or without nvidia-smi)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    used = [float(m) for p, m in (line.split(",")[:2] for line in out.strip().splitlines() if "," in line) if p.strip() == str(pid)]
    return sum(used) if used else None


def _probe(spec: dict[str, Any]) -> dict[str, Any]:
    from waste_edge.bench.frames import synthetic_frames

    w, h = spec["frame"]
    frames = synthetic_frames(int(spec["batch"]), w, h)
    if spec["kind"] == "reference":
        from waste_edge.train.runs import open_run

        ref = open_run(spec["path"]).reference(spec.get("threads") or 2)
        rgb = [f[..., ::-1] for f in frames]
        for _ in range(int(spec["iters"])):
            ref.predict_proba(rgb)
    else:
        from waste_edge.runtime.classifier import Classifier

        with Classifier(spec["path"], spec["backend"], threads=spec.get("threads"), session_config=spec.get("session_config") or None) as clf:
            for _ in range(int(spec["iters"])):
                clf.predict_proba(frames)
    return {"peak_rss_mb": _peak_rss_mb(), "gpu_mem_mb": gpu_memory_mb(os.getpid())}


def measure_in_child(spec: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    """Run the probe for `spec` in a child process; a `WasteEdgeError` naming the child's last error line on failure."""
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        proc = subprocess.run([sys.executable, "-m", "waste_edge.bench.memory", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise WasteEdgeError(f"memory probe took longer than {timeout:.0f} s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise WasteEdgeError(f"memory probe failed: {err}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(_probe(json.loads(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
