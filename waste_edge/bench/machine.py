"""What the numbers were measured on: CPU, cores, memory, GPU, library versions, load.

Benchmark figures mean nothing without the machine beside them, and on shared machines the load average at
the start and end of a run tells a reader how much to trust absolute times (ratios are the claim).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any

from waste_edge._io import library_versions
from waste_edge.runtime.cpu import cpu_info


def gpu_names() -> list[str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def machine_info() -> dict[str, Any]:
    import onnxruntime as ort

    cpu = cpu_info()
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu.model,
        "cpu_flags": list(cpu.flags),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gb"] = round(psutil.virtual_memory().total / 1e9, 1)
    except ImportError:
        pass
    info["gpus"] = gpu_names()
    info["onnxruntime_providers"] = ort.get_available_providers()
    info["versions"] = library_versions(("onnxruntime", "onnxruntime-gpu", "numpy", "opencv-python-headless", "opencv-python", "torch", "open_clip_torch", "scikit-learn", "pillow", "tensorrt"))
    info["openmp_env"] = openmp_env()
    info["load_average_start"] = load_average()
    return info


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), which is what thread counts should follow."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


OPENMP_PREFIXES = ("OMP_", "GOMP_", "KMP_")


def openmp_env() -> str:
    """The OpenMP variables this process inherited (wait policy, spin count, threads), as a table row prints them.

    The harness sets none of them for anyone; printing all of them shows a reader whether the shell did."""
    found = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith(OPENMP_PREFIXES))
    return ", ".join(found) if found else "none set (OpenMP defaults)"


_SETTLE_BYTES = 32 * 2**20 - 2**16  # just under glibc's largest dynamic mmap threshold (32 MiB on 64-bit)


def settle_allocator() -> str:
    """Bring this process's C allocator to the state of a long-running process, before anything is timed.

    Why: glibc serves a block above its mmap threshold (128 KiB at start) with a fresh mmap, whose pages fault
    in on first touch and go back at free; the first time the process frees such a block, the threshold rises
    to that block's size and later blocks come from the reused heap instead. So a pipeline that allocates
    a few MB per call (PIL and PyTorch on a 640x480 frame) runs at two speeds depending on history: measured
    here, the Lite0 reference 30.8 ms per frame in a fresh process, 22-24 ms once any buffer of 16-32 MB had
    been freed. The benchmark's worker (which had unpickled the frames) was on the fast side and a fresh
    process on the slow one: 24-29 % apart. Every timed process calls this once, after loading: the steady
    state an application that has run for a while is in, the same for every target. Returns the row's setting."""
    if platform.libc_ver()[0] != "glibc":
        return "untouched (not glibc)"
    block = bytearray(_SETTLE_BYTES)
    del block
    return "glibc, settled (one 32 MB block freed before timing)"
