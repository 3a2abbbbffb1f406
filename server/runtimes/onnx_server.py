"""TF-Serving-compatible server for ONNX artifacts made by `sagestack compile` (ONNX Runtime, CPU)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from server.protos import types_pb2
from server.runtimes.model_server import PREDICT, Backend, Servable, serve
from server.tensors import Signature, TensorSpec


class OnnxServable:
    def __init__(self, path: Path, threads: int) -> None:
        from compiler.onnx_backend import session

        meta = json.loads((path / "compiled" / "metadata.json").read_text())
        self.session = session(path / "compiled" / meta["artifact"], threads)
        self.output_names = [o.name for o in self.session.get_outputs()]
        inputs = {n: TensorSpec(n, types_pb2.DT_FLOAT, (-1, *s[1:])) for n, s in meta["inputs"].items()}
        outputs = {n: TensorSpec(n, types_pb2.DT_FLOAT, None) for n in self.output_names}
        self.signatures = {"serving_default": Signature("serving_default", PREDICT, inputs, outputs)}

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        return dict(zip(self.output_names, self.session.run(None, feeds), strict=True))


def make_backend(args: argparse.Namespace) -> Backend:
    def load(path: Path) -> Servable:
        return OnnxServable(path, args.tensorflow_intra_op_parallelism)

    return load


def main(argv: list[str] | None = None) -> None:
    serve(sys.argv[1:] if argv is None else argv, make_backend)


if __name__ == "__main__":
    main()
