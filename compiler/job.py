"""`sagestack compile`: SageMaker Neo's compilation job, locally.

Load the traced model from model.tar.gz, run it once as the reference, build each backend for the
target, check it against the reference (max absolute error, and that error relative to the largest
reference value), time it, and keep the fastest backend that passes. Everything measured goes to
<out>/<version>/compiled/metadata.json; the artifact sits beside it, named there for its runtime.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from compiler.artifact import load_traced
from compiler.backend import BuildJob, Tuning, backend_module, compiled_backends
from compiler.targets import resolve, runnable_here
from server import modeldir

MAX_REL_ERROR = 1e-3  # the FP32 gate; a reduced precision's tensor error is recorded, not gated (see compile_model)
PRECISIONS = ("fp32", "bf16", "int8")


def log(message: str) -> None:
    print(f"[compile] {message}", file=sys.stderr, flush=True)


def median_ms(call: Callable[[], Any], runs: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def parity(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    err = float(np.abs(got - want).max())
    return {"max_abs": err, "max_rel": err / max(float(np.abs(want).max()), 1e-12)}


def candidate(kind: str, job: BuildJob, reference: np.ndarray, runs: int) -> dict[str, Any]:
    """Build one backend, then check and time it here (a build for another CPU is recorded, not verified)."""
    backend = backend_module(kind)
    started = time.perf_counter()
    built = backend.build(job)
    record = {"backend": kind, "runtime": kind, "artifact": built.artifact.name, "precision": job.precision,
              "compile_s": round(time.perf_counter() - started, 1), **built.record}  # fmt: skip
    if backend.CAPABILITIES.target_specific and not runnable_here(job.target):
        record["error"] = f"built for {job.target.arch}, which this CPU cannot run: not verified"
        return record
    runner = backend.Runner(built.artifact, 0, job.precision)
    got = runner(job.example)[0]
    record["latency_ms"] = median_ms(lambda: runner(job.example), runs)
    record["parity"] = parity(got, reference)
    return record


def gate_passed(record: dict[str, Any]) -> bool:
    """FP32 must match the reference within MAX_REL_ERROR; a reduced precision is not gated on tensors."""
    return record["precision"] != "fp32" or record["parity"]["max_rel"] <= MAX_REL_ERROR


def precision_plan(backends: tuple[str, ...], precision: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """The backends that build at `precision`, and the precision each builds at (fp32 where the CPU lacks it)."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if precision == "int8":
        raise ValueError("--precision int8 (post-training quantization with a calibration set) is not built yet")
    able = tuple(b for b in backends if precision in backend_module(b).CAPABILITIES.precisions)
    if not able:
        raise ValueError(f"none of {', '.join(backends)} builds {precision}")
    for skipped in sorted(set(backends) - set(able)):
        log(f"{skipped}: builds fp32 only, skipped for --precision {precision}")
    plan = {}
    for b in able:
        native = precision == "fp32" or backend_module(b).supports(precision)
        plan[b] = precision if native else "fp32"
        if not native:
            log(f"{b}: this CPU has no native {precision}; building fp32 instead")
    return able, plan


def compile_model(
    model_tar: Path,
    framework: str,
    input_shape: dict[str, list[int]],
    target: str,
    out: Path,
    runs: int = 10,
    backends: tuple[str, ...] = ("tvm", "onnxruntime", "openvino"),
    tuning: Tuning = Tuning(),
    tuning_key: str | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Build, check and time every backend; keep the fastest that passes.

    `precision` other than fp32 (as Neo's): only backends that offer it build, each where this CPU runs it
    natively and at fp32 otherwise (said in the log). The FP32 gate (max rel <= 1e-3) does not apply to a
    reduced precision, whose error is expected: its tensor error is recorded, and for detectors the served
    detections' agreement with FP32 is measured by `sagestack bench latency`.
    """
    import torch

    from compiler import onnx_backend

    if framework.lower() != "pytorch":
        raise ValueError(f"framework {framework!r}: only pytorch (a traced TorchScript model) is supported")
    if len(input_shape) != 1:
        raise ValueError(f"--input-shape must name exactly one input, got {list(input_shape)}")
    ((input_name, shape),) = input_shape.items()
    tgt = resolve(target)
    known = compiled_backends()
    unknown = set(backends) - set(known)
    if unknown:
        raise ValueError(f"unknown backend(s) {sorted(unknown)} (known: {', '.join(known)})")
    unable = [b for b in backends if tgt.device not in backend_module(b).CAPABILITIES.devices]
    if unable:
        raise ValueError(f"target {tgt.name} is a {tgt.device} target; {', '.join(unable)} cannot build for it")
    backends, precisions = precision_plan(backends, precision)
    module = load_traced(model_tar)
    example = np.random.default_rng(0).random(shape, dtype=np.float32)
    x = torch.from_numpy(example)
    with torch.inference_mode():
        reference = module(x).numpy()
        reference_ms = median_ms(lambda: module(x), runs)
    log(f"reference (TorchScript, uncompiled): {reference_ms:.1f} ms median over {runs} runs")

    version_dir = modeldir.fresh_version(out, 1)
    compiled = version_dir / "compiled"
    compiled.mkdir()
    onnx_path = compiled / "model.onnx"
    onnx_backend.export(module, example, input_name, onnx_path)  # the interchange the backends start from
    job = BuildJob(module, example, input_name, shape, tgt, compiled, onnx_path, tuning,
                   tuning_key or model_tar.parent.parent.name)  # fmt: skip
    candidates = []
    for backend in backends:
        log(f"building {backend} for {tgt.name} ({tgt.arch}), {precisions[backend]}")
        try:
            candidates.append(candidate(backend, replace(job, precision=precisions[backend]), reference, runs))
        except Exception as exc:  # a backend that cannot build this model is a result, not a crash
            candidates.append({"backend": backend, "error": f"{type(exc).__name__}: {exc}"})
    for c in candidates:
        if "error" in c:
            log(f"{c['backend']}: failed: {c['error']}")
        else:
            p = c["parity"]
            log(f"{c['backend']}: {c['latency_ms']:.1f} ms, max abs {p['max_abs']:.2e}, max rel {p['max_rel']:.2e}")
    passing = [c for c in candidates if "error" not in c and gate_passed(c)]
    if not passing:
        raise RuntimeError(f"no backend passed parity (max rel <= {MAX_REL_ERROR}): {candidates}")
    best = min(passing, key=lambda c: c["latency_ms"])
    meta = {
        "runtime": best["runtime"],
        "backend": best["backend"],
        "artifact": best["artifact"],
        "framework": "pytorch",
        "compiled": True,
        "precision": best["precision"],
        "inputs": {input_name: shape},
        "outputs": ["output0"],
        "target": {"name": tgt.name, "device": tgt.device, "arch": tgt.arch, "cores": tgt.cores},
        "source": str(model_tar),
        "reference_latency_ms": reference_ms,
        "latency_ms": best["latency_ms"],
        "speedup": reference_ms / best["latency_ms"],
        "parity": best["parity"],
        "candidates": candidates,
    }
    modeldir.write_metadata(version_dir, meta)
    code = model_tar.parent.parent / "code"
    if code.is_dir():
        shutil.copytree(code, out / "code", dirs_exist_ok=True)
    log(f"picked {best['backend']}: {meta['speedup']:.2f}x the uncompiled model -> {compiled}")
    return meta
