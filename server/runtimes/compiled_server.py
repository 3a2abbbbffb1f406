"""TF-Serving-compatible server for the artifacts `sagestack compile` makes: TVM, OpenVINO, ONNX Runtime.

Every compiler backend exposes one `Runner(artifact, threads)`, called with the input array and
returning the outputs in order, so this one server fronts them all; `compiled/metadata.json` names
the runtime, the artifact and the input shapes. TVM and OpenVINO artifacts are built for the static
shape they were compiled with; the ONNX export takes any batch size.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np

from server.protos import types_pb2
from server.runtimes.model_server import PREDICT, Backend, Servable, serve
from server.tensors import Signature, TensorSpec

RUNNERS = {
    "tvm": "compiler.tvm_backend",
    "openvino": "compiler.openvino_backend",
    "onnxruntime": "compiler.onnx_backend",
}


class CompiledServable:
    def __init__(self, path: Path, threads: int) -> None:
        meta = json.loads((path / "compiled" / "metadata.json").read_text())
        runtime = meta["runtime"]
        if runtime not in RUNNERS:
            raise ValueError(f"{path}: runtime {runtime!r} is not a compiled runtime ({', '.join(RUNNERS)})")
        self.runner = importlib.import_module(RUNNERS[runtime]).Runner(path / "compiled" / meta["artifact"], threads)
        self.input_name = next(iter(meta["inputs"]))
        self.output_names = meta.get("outputs", ["output0"])
        dynamic = runtime == "onnxruntime"
        inputs = {n: TensorSpec(n, types_pb2.DT_FLOAT, (-1, *s[1:]) if dynamic else tuple(s))
                  for n, s in meta["inputs"].items()}  # fmt: skip
        outputs = {n: TensorSpec(n, types_pb2.DT_FLOAT, None) for n in self.output_names}
        self.signatures = {"serving_default": Signature("serving_default", PREDICT, inputs, outputs)}

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(inputs[self.input_name], dtype=np.float32)
        return dict(zip(self.output_names, self.runner(x), strict=True))


def make_backend(args: argparse.Namespace) -> Backend:
    def load(path: Path) -> Servable:
        return CompiledServable(path, args.tensorflow_intra_op_parallelism)

    return load


def main(argv: list[str] | None = None) -> None:
    serve(sys.argv[1:] if argv is None else argv, make_backend)


if __name__ == "__main__":
    main()
