"""`sagestack compile`: SageMaker Neo's compilation job, locally.

Load the traced model from model.tar.gz, run it once as the reference, build each backend for the
target, check it against the reference (max absolute error, and that error relative to the largest
reference value), time it, and keep the fastest backend that passes. Everything measured goes to
<out>/<version>/compiled/metadata.json; the artifact sits beside it, named there for its runtime.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compiler import onnx_backend, openvino_backend, tvm_backend
from compiler.artifact import load_traced
from compiler.targets import Target, resolve, runnable_here

MAX_REL_ERROR = 1e-3
BACKENDS = ("tvm", "onnxruntime", "openvino")


@dataclass(frozen=True)
class Tuning:
    """MetaSchedule trials to add this run (0: use the target's database as it is; use_database=False: ignore it)."""

    trials: int = 0
    trials_per_task: int = 64
    use_database: bool = True


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


def _runner_candidate(
    backend: str, onnx_path: Path, compiled: Path, example: np.ndarray, reference: np.ndarray, runs: int
) -> dict[str, Any]:
    """ONNX Runtime runs the ONNX export itself; OpenVINO converts it to its IR first."""
    started = time.perf_counter()
    if backend == "openvino":
        artifact = openvino_backend.convert(onnx_path, compiled / "model.xml")
        runner = openvino_backend.Runner(artifact)
    else:
        artifact, runner = onnx_path, onnx_backend.Runner(onnx_path)
    compile_s = round(time.perf_counter() - started, 1)
    got = runner(example)[0]
    return {"backend": backend, "runtime": backend, "artifact": artifact.name, "compile_s": compile_s,
            "latency_ms": median_ms(lambda: runner(example), runs), "parity": parity(got, reference)}  # fmt: skip


def _tvm_candidate(
    module: Any,
    input_name: str,
    shape: list[int],
    tgt: Target,
    compiled: Path,
    example: np.ndarray,
    reference: np.ndarray,
    runs: int,
    tuning: Tuning,
    tuning_key: str,
) -> dict[str, Any]:
    started = time.perf_counter()
    static_onnx = compiled / "model.static.onnx"  # Relax's importer needs every shape known
    onnx_backend.export(module, example, input_name, static_onnx, dynamic_batch=False)
    mod = tvm_backend.import_onnx(static_onnx, input_name, shape)
    static_onnx.unlink()
    database = tvm_backend.tuning_dir(tgt, tuning_key) if tuning.use_database else None
    trials = 0
    if database is not None and tuning.trials:
        trials = tvm_backend.tune(mod, tgt, database, tuning.trials, tuning.trials_per_task)
    library = tvm_backend.build(mod, tgt, compiled / "model.so", database)
    tuned = database is not None and (database / "database_tuning_record.json").exists()
    record = {"backend": "tvm-metaschedule" if tuned else "tvm-untuned", "runtime": "tvm", "artifact": library.name,
              "compile_s": round(time.perf_counter() - started, 1),
              "tuning_database": str(database) if tuned else None,
              "tuning_trials": trials or (tvm_backend.trials_done(database) if tuned else 0)}  # fmt: skip
    if not runnable_here(tgt):
        record["error"] = f"built for {tgt.arch}, which this CPU cannot run: not verified"
        return record
    runner = tvm_backend.Runner(library)  # the same interface as the other backends' runners
    got = runner(example)[0]
    record["latency_ms"] = median_ms(lambda: runner(example), runs)
    record["parity"] = parity(got, reference)
    return record


def compile_model(
    model_tar: Path,
    framework: str,
    input_shape: dict[str, list[int]],
    target: str,
    out: Path,
    runs: int = 10,
    backends: tuple[str, ...] = BACKENDS,
    tuning: Tuning = Tuning(),
    tuning_key: str | None = None,
) -> dict[str, Any]:
    import torch

    if framework.lower() != "pytorch":
        raise ValueError(f"framework {framework!r}: only pytorch (a traced TorchScript model) is supported")
    if len(input_shape) != 1:
        raise ValueError(f"--input-shape must name exactly one input, got {list(input_shape)}")
    ((input_name, shape),) = input_shape.items()
    tgt = resolve(target)
    if tgt.device != "cpu":
        raise ValueError(f"target {tgt.name} is a {tgt.device} target; this machine builds CPU targets only")
    module = load_traced(model_tar)
    example = np.random.default_rng(0).random(shape, dtype=np.float32)
    x = torch.from_numpy(example)
    with torch.inference_mode():
        reference = module(x).numpy()
        reference_ms = median_ms(lambda: module(x), runs)
    log(f"reference (TorchScript, uncompiled): {reference_ms:.1f} ms median over {runs} runs")

    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown backend(s) {sorted(unknown)} (known: {', '.join(BACKENDS)})")
    version_dir = out / "1"
    shutil.rmtree(version_dir, ignore_errors=True)
    compiled = version_dir / "compiled"
    compiled.mkdir(parents=True)
    onnx_path = compiled / "model.onnx"
    onnx_backend.export(module, example, input_name, onnx_path)  # the interchange both backends start from
    candidates = []
    for backend in backends:
        log(f"building {backend} for {tgt.name} ({tgt.arch})")
        try:
            if backend in ("onnxruntime", "openvino"):
                candidates.append(_runner_candidate(backend, onnx_path, compiled, example, reference, runs))
            else:
                candidates.append(_tvm_candidate(module, input_name, shape, tgt, compiled, example, reference,
                                                 runs, tuning, tuning_key or model_tar.parent.parent.name))  # fmt: skip
        except Exception as exc:  # a backend that cannot build this model is a result, not a crash
            candidates.append({"backend": backend, "error": f"{type(exc).__name__}: {exc}"})
    for c in candidates:
        if "error" in c:
            log(f"{c['backend']}: failed: {c['error']}")
        else:
            p = c["parity"]
            log(f"{c['backend']}: {c['latency_ms']:.1f} ms, max abs {p['max_abs']:.2e}, max rel {p['max_rel']:.2e}")
    passing = [c for c in candidates if "error" not in c and c["parity"]["max_rel"] <= MAX_REL_ERROR]
    if not passing:
        raise RuntimeError(f"no backend passed parity (max rel <= {MAX_REL_ERROR}): {candidates}")
    best = min(passing, key=lambda c: c["latency_ms"])
    meta = {
        "runtime": best["runtime"],
        "backend": best["backend"],
        "artifact": best["artifact"],
        "framework": "pytorch",
        "compiled": True,
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
    (compiled / "metadata.json").write_text(json.dumps(meta, indent=1))
    code = model_tar.parent.parent / "code"
    if code.is_dir():
        shutil.copytree(code, out / "code", dirs_exist_ok=True)
    log(f"picked {best['backend']}: {meta['speedup']:.2f}x the uncompiled model -> {compiled}")
    return meta
