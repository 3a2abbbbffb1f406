"""OpenVINO backend: the ONNX export compiled for the CPU plugin (latency hint, FP32).

The CPU plugin silently runs in bfloat16 on CPUs that have AVX512-BF16 or AMX (this one does), which
breaks FP32 parity (5e-3 relative on ResNet-50); inference precision is pinned to f32, so a
reduced-precision variant can only ever be asked for, never slip in. INT8 is the QDQ model
compiler.quantize makes: the plugin runs its quantized operations in int8 and the rest in f32.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from compiler.backend import BuildJob, Built, Capabilities

# The IR is converted with the export's dynamic batch axis, but served at the compiled shape like TVM's.
CAPABILITIES = Capabilities(
    dynamic_batch=False, threads=True, devices=("cpu",), target_specific=False, precisions=("fp32", "bf16", "int8")
)
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # INFERENCE_PRECISION_HINT per precision (int8: of the rest)


def build(job: BuildJob) -> Built:
    """The IR; bf16 is the CPU plugin's inference precision, applied when it loads; int8 is in the graph."""
    if job.precision == "int8":
        from compiler.quantize import int8_onnx

        return Built(
            convert(int8_onnx(job), job.out_dir / "model.int8.xml"), {"calibration_inputs": len(job.calibration)}
        )
    return Built(convert(job.onnx_path, job.out_dir / "model.xml"))


def supports(precision: str) -> bool:
    """Whether this machine's CPU plugin runs `precision` natively (BF16: AVX512-BF16 or AMX; INT8: the plugin
    lists it wherever it has int8 kernels, VNNI or not)."""
    import openvino as ov

    return precision == "fp32" or precision.upper() in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def convert(onnx_path: Path, out: Path) -> Path:
    """ONNX -> OpenVINO IR (model.xml + model.bin), which loads without the ONNX front end."""
    import openvino as ov

    # save_model compresses weights to FP16 by default: that "FP32" IR missed parity on yolov4-tiny (max rel
    # 4.2e-2, against 1.1e-7 uncompressed) and cost full YOLOv4 detections (F1 0.993 against FP32).
    ov.save_model(ov.convert_model(str(onnx_path)), str(out), compress_to_fp16=False)
    return out


class Runner:
    """One compiled model and its infer request; calls from the runtime's gRPC threads take turns (an infer
    request runs one inference at a time: a second caller got "Infer Request is busy")."""

    def __init__(self, model_xml: Path, threads: int = 0, precision: str = "fp32") -> None:
        import openvino as ov

        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": HINTS[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(model_xml), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        with self.lock:
            results = self.request.infer([np.ascontiguousarray(x, dtype=np.float32)])
            return [np.array(results[out]) for out in self.compiled.outputs]  # copies: the request's buffers are reused
