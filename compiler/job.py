"""`sagestack compile`: SageMaker Neo's compilation job, locally.

Load the traced model from model.tar.gz, run it once as the reference, build each backend for the
target at each precision asked for, check it against the reference (max absolute error, and that error
relative to the largest reference value; with an evaluation, also what the model serves on real photos),
time it, and keep the fastest candidate that passes. Everything measured goes to
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

from compiler import evaluation as evaluations
from compiler.artifact import load_traced
from compiler.backend import BuildJob, Tuning, backend_module, compiled_backends
from compiler.evaluation import Evaluation
from compiler.targets import resolve, runnable_here
from server import modeldir

MAX_REL_ERROR = 1e-3  # the FP32 gate; a reduced precision is judged by its evaluation instead (see gate_passed)
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


def candidate(kind: str, job: BuildJob, reference: np.ndarray, runs: int, evaluation: Evaluation | None = None,
              reference_outputs: list[list[np.ndarray]] | None = None) -> dict[str, Any]:  # fmt: skip
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
    if evaluation is not None and reference_outputs is not None:
        record["agreement"] = evaluation.measure(reference_outputs, runner)
    return record


def gate_passed(record: dict[str, Any], fp32_asked: bool = True) -> bool:
    """FP32 must match the reference within MAX_REL_ERROR. A reduced precision must pass its evaluation's bar;
    without an evaluation it is eligible only as the one precision asked for (its tensor error recorded)."""
    if record["precision"] == "fp32":
        return record["parity"]["max_rel"] <= MAX_REL_ERROR
    if "agreement" in record:
        return record["agreement"]["passes"]
    return not fp32_asked


def precision_plan(backends: tuple[str, ...], precision: str) -> list[tuple[str, str]]:
    """(backend, precision) to build, for `precision` (one, or several comma-separated): each backend that offers
    a precision builds it where this CPU runs it natively, and fp32 instead where it does not (said in the log)."""
    asked = [p.strip() for p in precision.split(",") if p.strip()]
    for p in asked:
        if p not in PRECISIONS:
            raise ValueError(f"--precision {p!r}: choose from {', '.join(PRECISIONS)}")
    plan: list[tuple[str, str]] = []
    for p in asked:
        able = [b for b in backends if p in backend_module(b).CAPABILITIES.precisions]
        if not able:
            raise ValueError(f"none of {', '.join(backends)} builds {p}")
        for skipped in sorted(set(backends) - set(able)):
            log(f"{skipped}: does not build {p}, skipped for it")
        for b in able:
            native = p == "fp32" or backend_module(b).supports(p)
            if not native:
                log(f"{b}: this CPU has no native {p}; building fp32 instead")
            if (b, p if native else "fp32") not in plan:
                plan.append((b, p if native else "fp32"))
    return plan


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
    calibration: Path | None = None,
    evaluate: str | None = None,
    keep_candidates: bool = False,
) -> dict[str, Any]:
    """Build, check and time every backend at every precision asked for; keep the fastest that passes.

    `precision` (as Neo's, or several comma-separated): only backends that offer one build it, each where this
    CPU runs it natively and at fp32 otherwise (said in the log). int8 is calibrated on `calibration` (a folder
    of images) or on views of the packaged photos. The FP32 gate (max rel <= 1e-3) does not apply to a reduced
    precision, whose tensor error is expected: with `evaluate` (compiler.evaluation.EVALUATIONS), every
    candidate is scored against the uncompiled model on real photos, and a reduced precision must reach the
    evaluation's bar to be picked. Only the picked artifact is kept, as Neo's output holds only it, unless
    `keep_candidates` (every candidate's artifact stays, for comparing them).
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
    plan = precision_plan(backends, precision)
    evaluation = evaluations.load(evaluate, shape) if evaluate else None
    calibration_inputs = None
    if any(p == "int8" for _, p in plan):
        prepare = evaluation.prepare if evaluation else evaluations.resize_input(shape)
        calibration_inputs = evaluations.calibration_set(prepare, calibration)
        log(f"int8 calibration: {len(calibration_inputs)} inputs from {calibration or 'the packaged photos'}")
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
                   tuning_key or model_tar.parent.parent.name, calibration=calibration_inputs)  # fmt: skip

    def reference_fn(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return [module(torch.from_numpy(x)).numpy()]

    reference_outputs = evaluation.outputs(reference_fn) if evaluation else None  # once, for every candidate
    candidates = []
    for backend, backend_precision in plan:
        log(f"building {backend} for {tgt.name} ({tgt.arch}), {backend_precision}")
        try:
            built = candidate(backend, replace(job, precision=backend_precision), reference, runs, evaluation,
                              reference_outputs)  # fmt: skip
            candidates.append(built)
        except Exception as exc:  # a backend that cannot build this model is a result, not a crash
            candidates.append({"backend": backend, "precision": backend_precision,
                               "error": f"{type(exc).__name__}: {exc}"})  # fmt: skip
    for c in candidates:
        if "error" in c:
            log(f"{c['backend']} {c['precision']}: failed: {c['error']}")
        else:
            p, a = c["parity"], c.get("agreement")
            judged = f", {evaluation.key} {a[evaluation.key]:.3f}" if a and evaluation else ""
            log(f"{c['backend']} {c['precision']}: {c['latency_ms']:.1f} ms, max abs {p['max_abs']:.2e}, "
                f"max rel {p['max_rel']:.2e}{judged}")  # fmt: skip
    fp32_asked = "fp32" in {p.strip() for p in precision.split(",")}  # asked for, not fallen back to
    passing = [c for c in candidates if "error" not in c and gate_passed(c, fp32_asked)]
    if not passing:
        raise RuntimeError(f"no candidate passed parity (max rel <= {MAX_REL_ERROR}, or the evaluation's bar): "
                           f"{candidates}")  # fmt: skip
    best = min(passing, key=lambda c: c["latency_ms"])
    meta = {
        "runtime": best["runtime"],
        "backend": best["backend"],
        "artifact": best["artifact"],
        "framework": "pytorch",
        "compiled": True,
        "precision": best["precision"],
        "agreement": best.get("agreement"),
        "calibration": None
        if calibration_inputs is None
        else {"inputs": len(calibration_inputs), "source": str(calibration or "packaged photos")},
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
    if not keep_candidates:
        keep = {best["artifact"]}
        if best["artifact"].endswith(".xml"):
            keep.add(Path(best["artifact"]).with_suffix(".bin").name)  # an OpenVINO IR's weights
        for path in compiled.iterdir():
            if path.name not in keep:
                path.unlink()
    modeldir.write_metadata(version_dir, meta)
    code = model_tar.parent.parent / "code"
    if code.is_dir():
        shutil.copytree(code, out / "code", dirs_exist_ok=True)
    log(f"picked {best['backend']} {best['precision']}: {meta['speedup']:.2f}x the uncompiled model -> {compiled}")
    return meta
