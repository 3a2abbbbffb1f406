"""What every compiler backend module exposes, so `sagestack compile` and the compiled runtime treat them alike.

A backend module (registered by one line in server.runtimes.RUNTIMES, with `compiler=` naming it) has:
- `CAPABILITIES`: a `Capabilities`;
- `build(job: BuildJob) -> Built`: the artifact for the job's target, written under `job.out_dir`;
- `Runner(artifact: Path, threads: int = 0, precision: str = "fp32")`: called with the input array, returns the
  outputs in order (`precision` is one of CAPABILITIES.precisions, as metadata.json records it);
- `supports(precision) -> bool`, only where CAPABILITIES.precisions goes beyond fp32: whether this machine runs
  that precision natively (`sagestack compile` builds fp32 instead where it does not).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from compiler.targets import Target


@dataclass(frozen=True)
class Capabilities:
    dynamic_batch: bool  # the artifact takes any batch size (else only the compiled shape)
    threads: bool  # Runner honours `threads` (SAGEMAKER_TFS_INTRA_OP_PARALLELISM)
    devices: tuple[str, ...]  # targets' devices it builds for
    target_specific: bool  # code generated for the target's CPU, so it runs here only if this CPU can
    precisions: tuple[str, ...] = ("fp32",)  # what `sagestack compile --precision` may ask of it


@dataclass(frozen=True)
class Tuning:
    """MetaSchedule trials to add this run (0: use the target's database as it is; use_database=False: ignore it)."""

    trials: int = 0
    trials_per_task: int = 64
    use_database: bool = True
    root: Path | None = None  # where the per-target databases live (SAGESTACK_TUNING_DIR; default: shipped)


@dataclass(frozen=True)
class BuildJob:
    """One model to build for one target: the traced module, an example input, the shared ONNX export."""

    module: Any  # the TorchScript module
    example: np.ndarray
    input_name: str
    shape: list[int]
    target: Target
    out_dir: Path  # <version>/compiled
    onnx_path: Path  # the dynamic-batch ONNX export every backend may start from
    tuning: Tuning = Tuning()
    tuning_key: str = "model"
    precision: str = "fp32"
    calibration: np.ndarray | None = None  # [N, ...] inputs for int8's activation ranges (compiler.evaluation)


@dataclass(frozen=True)
class Built:
    artifact: Path
    record: dict[str, Any] = field(default_factory=dict)  # what metadata.json's candidate entry adds


def compiled_backends() -> dict[str, str]:
    """Runtime name -> compiler backend module, from the one registry."""
    from server.runtimes import RUNTIMES

    return {kind: rt.compiler for kind, rt in RUNTIMES.items() if rt.compiler}


def backend_module(runtime: str) -> ModuleType:
    modules = compiled_backends()
    if runtime not in modules:
        raise ValueError(f"runtime {runtime!r} is not a compiled runtime ({', '.join(modules)})")
    return importlib.import_module(modules[runtime])
