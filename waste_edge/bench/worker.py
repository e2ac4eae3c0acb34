"""One benchmark target in a process of its own: the reference pipeline of a run, or one model on one backend.

Why a process per target: PyTorch (OpenMP) and ONNX Runtime each run their own thread pools, and in one
process they fight for the cores or must be told to sleep between parallel regions, which slows whichever
runtime is told. Worse, process-wide knobs (OpenMP's wait policy, thread counts) can only be set once, for
everyone. So each target lives in a worker process spawned once, loads only what it needs at its own
defaults (PyTorch's OpenMP as it starts, ONNX Runtime's session defaults, plus whatever the user asked for
explicitly), and answers the parent's commands over a pipe: time N calls on a batch of the frames the parent
sent, report its peak RSS, score a dataset, profile, run the camera loop. The parent (`harness.py`) only
schedules: it interleaves the workers' rounds and computes the ratios.

The worker reports the settings it really ran with (threads, OpenMP wait policy, ONNX Runtime session
options) so every table row says how it was measured.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from waste_edge.bench.machine import openmp_env, settle_allocator
from waste_edge.errors import WasteEdgeError


def one_line(e: BaseException) -> str:
    """An exception as one line: the message of our own errors, `Type: message` for the rest."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, WasteEdgeError) and text else f"{type(e).__name__}: {text}" if text else type(e).__name__


def peak_rss_mb() -> float:
    """This process's high-water RSS (VmHWM on Linux, which starts afresh at exec; `ru_maxrss` elsewhere)."""
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


def file_size_mb(path: Path) -> float | None:
    from waste_edge.runtime.backends.engine_sidecar import sidecar_path

    files = [path, sidecar_path(path), Path(str(path) + ".data")]  # model, engine sidecar, ONNX external data
    total = sum(f.stat().st_size for f in dict.fromkeys(files) if f.is_file())
    return total / 1e6 if total else None


def ort_session_settings(session: Any, threads: int | None, session_config: dict[str, str]) -> dict[str, Any]:
    """What an ONNX Runtime session was built with (0 intra-op threads = ORT's default: one per physical core)."""
    opts = session.get_session_options()
    intra = opts.intra_op_num_threads
    return {
        "runtime": "onnxruntime",
        "threads": intra if intra else "default (one per physical core)",
        "inter_op_threads": opts.inter_op_num_threads,
        "graph_optimization": str(opts.graph_optimization_level).rsplit(".", 1)[-1],
        "execution_mode": str(opts.execution_mode).rsplit(".", 1)[-1],
        "session_config": dict(session_config),
        "openmp_env": openmp_env(),
    }


class Target:
    """What a worker holds: a loaded reference or Classifier, called on frames the parent sent."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.kind: str = spec["kind"]  # reference | model
        self.path = Path(spec["path"])
        self.backend: str = spec.get("backend", "cpu")
        self.threads: int | None = spec.get("threads")
        self.session_config: dict[str, str] = dict(spec.get("session_config") or {})
        self.obj: Any = None
        self.bgr: np.ndarray | None = None
        self.rgb: list[np.ndarray] = []

    # -- loading -------------------------------------------------------------------------------------------

    def load(self, frames_bgr: np.ndarray, first_batch: int) -> dict[str, Any]:
        self.bgr = np.ascontiguousarray(frames_bgr)
        self.rgb = [np.ascontiguousarray(f[..., ::-1]) for f in self.bgr]
        t0 = time.perf_counter()
        info = self._load_reference() if self.kind == "reference" else self._load_model()
        self.call(first_batch)
        info["settings"]["allocator"] = settle_allocator()
        info["load_s"] = time.perf_counter() - t0
        info["pid"] = os.getpid()
        return info

    def _load_reference(self) -> dict[str, Any]:
        import torch

        from waste_edge.train.runs import open_run

        threads = self.threads or torch.get_num_threads()  # PyTorch's own default unless asked
        ref = self.obj = open_run(self.path).reference(threads)
        return {
            "name": self.path.name, "variant": "reference", "format": "pytorch+sklearn", "provider": "torch",
            "encoder": ref.encoder_id, "head_sha256": ref.head_sha256, "size_mb": ref.size_mb(), "classes": list(ref.classes),
            "settings": {"runtime": "torch", "threads": torch.get_num_threads(),
                         "threads_source": "--torch-threads" if self.threads else "PyTorch default",
                         "openmp_env": openmp_env()},
        }

    def _load_model(self) -> dict[str, Any]:
        from waste_edge.runtime.classifier import Classifier

        clf = self.obj = Classifier(self.path, self.backend, threads=self.threads, session_config=self.session_config or None)
        session = getattr(clf.runner, "session", None)
        if session is not None:
            settings = ort_session_settings(session, self.threads, self.session_config)
        else:
            settings = {"runtime": type(clf.runner).__name__, "openmp_env": openmp_env()}
        return {
            "name": self.path.name, "variant": clf.metadata.variant, "format": self.path.suffix.lstrip("."),
            "provider": clf.provider, "encoder": clf.metadata.encoder, "head_sha256": clf.metadata.head_sha256,
            "size_mb": file_size_mb(self.path), "classes": list(clf.classes), "settings": settings,
        }

    # -- the timed call ------------------------------------------------------------------------------------

    def call(self, batch: int) -> Any:
        """Frames -> probabilities: the BGR NHWC batch for a fused model, RGB frames (PIL inside) for the reference."""
        if self.kind == "reference":
            return self.obj.predict_proba(self.rgb[:batch])
        return self.obj.predict_proba(self.bgr[:batch])

    def timed(self, batch: int, iters: int | None, seconds: float | None) -> list[float]:
        """One round of timed calls, after one untimed call: between rounds the other targets ran, evicting this
        one's caches and putting its thread pool to sleep, which a pipeline running alone never pays per round."""
        self.call(batch)
        lat: list[float] = []
        perf = time.perf_counter
        end = perf() + seconds if seconds is not None else None
        while True:
            t0 = perf()
            self.call(batch)
            t1 = perf()
            lat.append((t1 - t0) * 1e3)
            if (end is not None and t1 >= end) or (end is None and len(lat) >= (iters or 1)):
                return lat

    # -- optional measurements -----------------------------------------------------------------------------

    def accuracy(self, samples: list[tuple[str, str]], progress: bool) -> dict[str, Any]:
        """Batch-1 accuracy on (path, label) images, decoded here exactly as the parity check decodes them."""
        from waste_edge.data.decode import DecodeError, load_rgb_array

        classes = list(self.obj.classes)
        correct = seen = unreadable = 0
        items: Any = samples
        if progress:
            from tqdm import tqdm

            items = tqdm(samples, desc=f"accuracy {self.path.name} ({self.backend})", unit="img", leave=False, file=sys.stderr)
        for path, label in items:
            try:
                img = load_rgb_array(path)
            except DecodeError:
                unreadable += 1
                continue
            p = self.obj.predict_proba([img]) if self.kind == "reference" else self.obj.predict_proba(img, "RGB")
            correct += int(classes[int(np.argmax(p[0]))] == label)
            seen += 1
        return {"accuracy": correct / seen if seen else None, "images": seen, "unreadable": unreadable}

    def profile(self, batches: list[int]) -> list[dict[str, Any]]:
        from waste_edge.bench.profile import profile_ops

        return [{"batch": b, **profile_ops(self.path, self.bgr[:b], threads=self.threads,
                                                    session_config=self.session_config)} for b in batches]

    def camera(self, frames: np.ndarray, rounds: int) -> dict[str, Any]:
        from waste_edge.bench.camera_overhead import measure_camera_overhead

        return measure_camera_overhead(self.obj, frames, rounds=rounds, model=self.path.name).to_dict()

    def close(self) -> None:
        obj, self.obj = self.obj, None
        if obj is not None and hasattr(obj, "close"):
            obj.close()


def serve(inbox: Any, outbox: Any, spec: dict[str, Any]) -> None:
    """The worker's loop: one command in, one reply out ({"ok": value} or {"error": one line}), until "close"."""
    target = Target(spec)
    while True:
        try:
            msg = inbox.recv()
        except (EOFError, OSError):
            break  # the parent went away
        cmd = msg.get("cmd")
        try:
            if cmd == "close":
                target.close()
                outbox.send({"ok": True})
                break
            if cmd == "load":
                out: Any = target.load(msg["frames"], int(msg["first_batch"]))
            elif cmd == "warmup":
                for _ in range(int(msg["n"])):
                    target.call(int(msg["batch"]))
                out = True
            elif cmd == "time":
                out = target.timed(int(msg["batch"]), msg.get("iters"), msg.get("seconds"))
            elif cmd == "memory":
                out = {"peak_rss_mb": peak_rss_mb(), "gpu_mem_mb": gpu_memory_mb(os.getpid())}
            elif cmd == "accuracy":
                out = target.accuracy(msg["samples"], bool(msg.get("progress")))
            elif cmd == "profile":
                out = target.profile(list(msg["batches"]))
            elif cmd == "camera":
                out = target.camera(msg["frames"], int(msg["rounds"]))
            else:
                raise WasteEdgeError(f"unknown worker command {cmd!r}")
            outbox.send({"ok": out})
        except Exception as e:  # one failed command fails one row; the worker stays up for the rest
            outbox.send({"error": one_line(e)})
    inbox.close()
    outbox.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m waste_edge.bench.worker IN_FD OUT_FD SPEC_JSON`, started by `harness.Worker`."""
    import json
    from multiprocessing.connection import Connection

    args = sys.argv[1:] if argv is None else argv
    serve(Connection(int(args[0]), writable=False), Connection(int(args[1]), readable=False), json.loads(args[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
