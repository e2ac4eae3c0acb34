"""Which CPU this is, and the instruction-set extensions that decide how ONNX Runtime and PyTorch compute on it.

Why it is recorded: a float model's last bits depend on the CPU (SIMD width, FMA, the kernels oneDNN and MLAS pick
for it), so a model rebuilt from the same inputs on another CPU is equivalent, not bit-identical; and an INT8 model's
integer arithmetic depends on the u8 x s8 GEMM kernel this CPU gets (README "INT8 that gives the same answers on
every CPU"): x86 without VNNI adds two products into a saturating int16 (VPMADDUBSW), while VNNI, AMX and Arm's
widening and dot-product instructions accumulate in int32. A model card names the CPU it was built on and these
flags (scripts/build_default_model.py), and `waste-edge info` says which kernel family the CPU it runs on uses.

Standard library only: the runtime imports this.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

# The flags that change float results or the integer kernel family, in the order a reader looks for them.
# x86: avx2/fma (256-bit float kernels), avx512* (512-bit kernels, VNNI), avx_vnni, amx_*; Arm: asimd (NEON on
# aarch64), neon (32-bit Arm), asimddp (SDOT/UDOT dot product), i8mm (SMMLA/USMMLA), sve.
ISA_FLAGS = ("sse4_1", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
             "amx_bf16", "neon", "asimd", "asimddp", "i8mm", "sve")


@dataclass(frozen=True)
class CpuInfo:
    """A CPU as /proc/cpuinfo names it, with the flags of ISA_FLAGS it has."""

    model: str
    machine: str  # platform.machine(): x86_64, aarch64, ...
    flags: tuple[str, ...]

    @property
    def int8_gemm(self) -> str:
        """The u8 x s8 GEMM arithmetic ONNX Runtime's MLAS uses here, and whether an int16 pair sum can saturate."""
        f = set(self.flags)
        if self.machine in ("x86_64", "AMD64", "i686", "x86"):
            if "amx_int8" in f:
                return "AMX / AVX-512 VNNI: int32 accumulation, no saturation"
            if "avx512_vnni" in f or "avx_vnni" in f:
                return "VNNI (VPDPBUSD): int32 accumulation, no saturation"
            if "avx2" in f or "avx512bw" in f:
                return "VPMADDUBSW: int16 pair sums, saturate beyond 32767"
            return "SSE widening multiply: int32 accumulation, no saturation"
        if self.machine in ("aarch64", "arm64") or "asimd" in f or "neon" in f:
            if "i8mm" in f or "asimddp" in f:
                return "Arm dot product (SDOT/UDOT, SMMLA): int32 accumulation, no saturation"
            return "NEON widening multiply-accumulate: int32 accumulation, no saturation"
        return "portable C++: int32 accumulation, no saturation"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "machine": self.machine, "isa": list(self.flags), "int8_gemm": self.int8_gemm}


def cpu_info(cpuinfo: str | None = None, machine: str | None = None) -> CpuInfo:
    """This CPU (x86 `model name` / `flags`, Arm `Model` or `Hardware` / `Features`; platform names where absent).
    `cpuinfo` / `machine`: another machine's /proc/cpuinfo text and architecture (tests)."""
    machine = machine or platform.machine()
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as fh:
                cpuinfo = fh.read()
        except OSError:
            cpuinfo = ""
    first: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    name = first.get("model name") or first.get("Model") or first.get("Hardware") or platform.processor() or machine
    have = set((first.get("flags") or first.get("Features") or "").split())
    return CpuInfo(model=name, machine=machine, flags=tuple(f for f in ISA_FLAGS if f in have))
