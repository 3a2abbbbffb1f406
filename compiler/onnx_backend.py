"""ONNX Runtime backend: TorchScript module -> ONNX (dynamic batch) -> an optimised ORT session; INT8 runs the
QDQ model compiler.quantize makes from the same export."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from compiler.backend import BuildJob, Built, Capabilities

CAPABILITIES = Capabilities(
    dynamic_batch=True, threads=True, devices=("cpu",), target_specific=False, precisions=("fp32", "int8")
)


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
    """ONNX Runtime runs the shared dynamic-batch export itself, or its INT8 quantization."""
    if job.precision == "int8":
        from compiler.quantize import int8_onnx

        return Built(int8_onnx(job), {"calibration_inputs": len(job.calibration)})
    return Built(job.onnx_path)


def supports(precision: str) -> bool:
    """ONNX Runtime's int8 kernels run on every x86-64 CPU (fastest with VNNI)."""
    return precision in CAPABILITIES.precisions


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
        self.session = session(path, threads)  # an int8 artifact carries its quantization in the graph
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: x})
