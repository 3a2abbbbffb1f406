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
from pathlib import Path
from typing import Any

import numpy as np

from compiler import onnx_backend
from compiler.artifact import load_traced
from compiler.targets import resolve

MAX_REL_ERROR = 1e-3


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


def compile_model(
    model_tar: Path, framework: str, input_shape: dict[str, list[int]], target: str, out: Path, runs: int = 10
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

    version_dir = out / "1"
    shutil.rmtree(version_dir, ignore_errors=True)
    compiled = version_dir / "compiled"
    compiled.mkdir(parents=True)
    candidates = []
    artifact = compiled / "model.onnx"
    try:
        onnx_backend.export(module, example, input_name, artifact)
        sess = onnx_backend.session(artifact)
        got = sess.run(None, {input_name: example})[0]
        ms = median_ms(lambda: sess.run(None, {input_name: example}), runs)
        candidates.append({"backend": "onnxruntime", "runtime": "onnxruntime", "artifact": artifact.name,
                           "latency_ms": ms, "parity": parity(got, reference)})  # fmt: skip
    except Exception as exc:  # a backend that cannot build this model is a result, not a crash
        candidates.append({"backend": "onnxruntime", "error": f"{type(exc).__name__}: {exc}"})
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
