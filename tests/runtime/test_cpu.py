"""The CPU a model was built on and the integer kernels it runs with, read from /proc/cpuinfo text."""

from waste_edge.runtime.cpu import cpu_info

EPYC = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_1 avx avx2 fma bmi2\n"
SAPPHIRE = ("model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: sse4_1 avx2 fma avx512f avx512bw avx512_vnni avx_vnni "
            "avx512_bf16 amx_bf16 amx_int8 amx_tile\n")
CASCADE = "model name\t: Intel(R) Xeon(R) Gold 6230\nflags\t\t: sse4_1 avx2 fma avx512f avx512bw avx512_vnni\n"
SKYLAKE = "model name\t: Intel(R) Xeon(R) Gold 6130\nflags\t\t: sse4_1 avx2 fma avx512f avx512bw\n"
GRAVITON = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 asimddp i8mm sve\nCPU part\t: 0xd40\n"
PI4 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"


def test_x86_cpus_are_named_with_the_flags_that_decide_int8_kernels():
    amd = cpu_info(EPYC, "x86_64")
    assert (amd.model, amd.flags) == ("AMD EPYC", ("sse4_1", "avx2", "fma"))
    assert amd.int8_gemm.startswith("VPMADDUBSW") and "saturate" in amd.int8_gemm
    assert cpu_info(SKYLAKE, "x86_64").int8_gemm.startswith("VPMADDUBSW")  # AVX-512 without VNNI saturates too
    assert cpu_info(CASCADE, "x86_64").int8_gemm.startswith("VNNI")
    spr = cpu_info(SAPPHIRE, "x86_64")
    assert {"avx512_vnni", "avx_vnni", "amx_int8"} <= set(spr.flags) and spr.int8_gemm.startswith("AMX")
    assert spr.to_dict() == {"model": spr.model, "machine": "x86_64", "isa": list(spr.flags), "int8_gemm": spr.int8_gemm}


def test_arm_cpus_name_neon_and_the_dot_product():
    g = cpu_info(GRAVITON, "aarch64")
    assert {"asimd", "asimddp", "i8mm", "sve"} <= set(g.flags) and g.int8_gemm.startswith("Arm dot product")
    pi = cpu_info(PI4, "aarch64")
    assert pi.model == "Raspberry Pi 4 Model B Rev 1.4" and pi.flags == ("asimd",) and pi.int8_gemm.startswith("NEON")


def test_this_machine_is_described():
    here = cpu_info()
    assert here.model and here.machine and ("accumulation" in here.int8_gemm or "saturate" in here.int8_gemm)
