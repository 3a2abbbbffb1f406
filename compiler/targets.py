"""SageMaker Neo target names -> what the compilers need (device, CPU or GPU architecture)."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Target:
    name: str
    device: str  # cpu | cuda
    arch: str  # LLVM -mcpu for CPUs, sm_XX for GPUs
    cores: int | None = None


# The instance families Neo compiles for, with the processors they run on.
TARGETS = {
    "ml_c4": Target("ml_c4", "cpu", "haswell"),
    "ml_m4": Target("ml_m4", "cpu", "haswell"),
    "ml_c5": Target("ml_c5", "cpu", "skylake-avx512"),
    "ml_m5": Target("ml_m5", "cpu", "skylake-avx512"),
    "ml_r5": Target("ml_r5", "cpu", "skylake-avx512"),
    "ml_c6i": Target("ml_c6i", "cpu", "icelake-server"),
    "ml_m6i": Target("ml_m6i", "cpu", "icelake-server"),
    "ml_c6g": Target("ml_c6g", "cpu", "neoverse-n1"),
    "ml_c7g": Target("ml_c7g", "cpu", "neoverse-v1"),
    "ml_p2": Target("ml_p2", "cuda", "sm_37"),
    "ml_p3": Target("ml_p3", "cuda", "sm_70"),
    "ml_g4dn": Target("ml_g4dn", "cuda", "sm_75"),
    "ml_g5": Target("ml_g5", "cuda", "sm_86"),
    "ml_p4d": Target("ml_p4d", "cuda", "sm_80"),
}


AVX512_ARCHS = ("skylake-avx512", "cascadelake", "cooperlake", "icelake-server", "sapphirerapids", "znver4")


def cpu_flags() -> set[str]:
    """This CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def runnable_here(tgt: Target) -> bool:
    """Whether code built for tgt runs on this CPU (x86 only: AVX-512 targets need AVX-512 here)."""
    if tgt.name == "this_machine":
        return True
    if tgt.arch.startswith("neoverse"):
        return platform.machine() == "aarch64"
    return tgt.arch not in AVX512_ARCHS or "avx512f" in cpu_flags()


def this_machine() -> Target:
    """The CPU here, by its features (LLVM's own detection needs TVM; /proc/cpuinfo does not)."""
    flags = cpu_flags()
    if {"avx512_vnni", "avx512bw"} <= flags:
        arch = "cascadelake" if "avx512_bf16" not in flags else "cooperlake"
    elif "avx512f" in flags:
        arch = "skylake-avx512"
    elif "avx2" in flags:
        arch = "haswell"
    else:
        arch = "x86-64"
    import os

    return Target("this_machine", "cpu", arch, os.cpu_count())


def resolve(name: str) -> Target:
    key = name.replace(".", "_").lower()
    if key in ("this_machine", "native", "local"):
        return this_machine()
    if key not in TARGETS:
        raise ValueError(f"unknown target {name!r}; known: {', '.join(sorted(TARGETS))}, this_machine")
    return TARGETS[key]
