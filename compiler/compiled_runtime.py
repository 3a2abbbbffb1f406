"""The backend for every artifact `sagestack compile` makes (runtimes tvm, openvino, onnxruntime).

Every compiler backend exposes one `Runner(artifact, threads)` (compiler/backend.py), so this one servable
fronts them all; `compiled/metadata.json` names the runtime, the artifact and the input shapes. An artifact
without a dynamic batch (TVM, OpenVINO here) takes only the static shape it was compiled with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler.backend import backend_module
from server.modeldir import read_metadata
from server.protos import types_pb2
from server.runtimes.servable import PREDICT, Backend, RuntimeOptions, Servable
from server.tensors import Signature, TensorSpec


class CompiledServable:
    def __init__(self, path: Path, threads: int) -> None:
        meta = read_metadata(path)
        backend = backend_module(meta["runtime"])
        threads = threads if backend.CAPABILITIES.threads else 0  # 0: the backend's own choice
        self.runner = backend.Runner(path / "compiled" / meta["artifact"], threads, meta.get("precision", "fp32"))
        self.input_name = next(iter(meta["inputs"]))
        self.output_names = meta.get("outputs", ["output0"])
        dynamic = backend.CAPABILITIES.dynamic_batch
        inputs = {n: TensorSpec(n, types_pb2.DT_FLOAT, (-1, *s[1:]) if dynamic else tuple(s))
                  for n, s in meta["inputs"].items()}  # fmt: skip
        outputs = {n: TensorSpec(n, types_pb2.DT_FLOAT, None) for n in self.output_names}
        self.signatures = {"serving_default": Signature("serving_default", PREDICT, inputs, outputs)}

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(inputs[self.input_name], dtype=np.float32)
        return dict(zip(self.output_names, self.runner(x), strict=True))


def make_backend(options: RuntimeOptions) -> Backend:
    def load(path: Path) -> Servable:
        return CompiledServable(path, options.intra_op_threads)

    return load
