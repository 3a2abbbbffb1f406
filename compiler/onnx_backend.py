"""ONNX Runtime backend: TorchScript module -> ONNX (dynamic batch) -> an optimised ORT session."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from compiler.backend import BuildJob, Built, Capabilities

CAPABILITIES = Capabilities(dynamic_batch=True, threads=True, devices=("cpu",), target_specific=False)


def export(module, example: np.ndarray, input_name: str, out: Path, dynamic_batch: bool = True) -> Path:
    """TorchScript -> ONNX; a dynamic batch axis unless asked for the example's static shape (TVM wants that)."""
    import torch

    buf = io.BytesIO()
    torch.onnx.export(
        module,
        (torch.from_numpy(example),),
        buf,
        input_names=[input_name],
        output_names=["output0"],
        dynamic_axes={input_name: {0: "batch"}, "output0": {0: "batch"}} if dynamic_batch else None,
        opset_version=17,
        dynamo=False,
    )
    out.write_bytes(buf.getvalue())
    return out


def build(job: BuildJob) -> Built:
    """ONNX Runtime runs the shared dynamic-batch export itself."""
    return Built(job.onnx_path)


def session(path: Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Runner:
    """The compiler backends' common interface: Runner(artifact, threads, precision)(x) -> outputs in order."""

    def __init__(self, path: Path, threads: int = 0, precision: str = "fp32") -> None:
        self.session = session(path, threads)  # fp32 only (CAPABILITIES.precisions)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: x})
