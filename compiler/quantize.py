"""INT8 post-training quantization, shared by the backends: ONNX Runtime's static quantizer writes the export
as a QDQ model (int8 weights per channel, uint8 activations with ranges from the job's calibration set).

Only the operators that carry the arithmetic (QUANTIZED_OPS) are quantized. Quantizing everything also
quantized YOLOv4's output rows, whose one uint8 range spans box pixels (0-416) and scores (0-1): every score
came out 0 and no detection survived (F1 0.0 against FP32 under `--evaluate detections`).

ONNX Runtime runs that model with its int8 kernels; OpenVINO reads the same Q/DQ pairs as its own quantized
operations. So both backends build one quantized graph, made once per compile job.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler.backend import BuildJob

QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


class Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over the job's calibration array, one input at a time."""

    def __init__(self, input_name: str, inputs: np.ndarray) -> None:
        self.input_name, self.rows = input_name, iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        row = next(self.rows, None)
        return None if row is None else {self.input_name: np.ascontiguousarray(row[None], dtype=np.float32)}


def int8_onnx(job: BuildJob) -> Path:
    """<compiled>/model.int8.onnx, quantized from the job's export unless an earlier backend made it already."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = job.out_dir / "model.int8.onnx"
    if out.exists():
        return out
    if job.calibration is None or not len(job.calibration):
        raise ValueError("int8 needs a calibration set (compile_model makes one)")
    prepared = job.out_dir / "model.prequant.onnx"
    # ONNX's own shape inference: the symbolic one cannot follow the export's dynamic batch through every op.
    quant_pre_process(str(job.onnx_path), str(prepared), skip_symbolic_shape=True)
    try:
        quantize_static(str(prepared), str(out), Calibration(job.input_name, job.calibration),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    finally:
        prepared.unlink(missing_ok=True)
    return out
