"""TF-Serving-compatible server for TorchScript models (the uncompiled PyTorch path).

A version directory holds the artifact as SageMaker Neo receives it, `model.tar.gz` with a traced
`model.pth` inside, and `compiled/metadata.json` naming this runtime and the input shapes
(`{"runtime": "torchscript", "artifact": "model.tar.gz", "inputs": {"input0": [1, 3, 416, 416]}}`).
One signature, `serving_default`, maps the named inputs, in order, to `output0`, `output1`, ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from compiler.artifact import load_traced
from server.protos import types_pb2
from server.runtimes.model_server import PREDICT, Backend, Servable, serve
from server.tensors import Signature, TensorSpec


class TorchScriptServable:
    def __init__(self, path: Path) -> None:
        import torch

        meta = json.loads((path / "compiled" / "metadata.json").read_text())
        self.module = load_traced(path / meta.get("artifact", "model.tar.gz"))
        self._torch = torch
        self.input_names = list(meta["inputs"])
        inputs = {
            name: TensorSpec(name, types_pb2.DT_FLOAT, tuple([-1, *shape[1:]]))
            for name, shape in meta["inputs"].items()
        }
        outputs = {name: TensorSpec(name, types_pb2.DT_FLOAT, None) for name in meta.get("outputs", ["output0"])}
        self.signatures = {"serving_default": Signature("serving_default", PREDICT, inputs, outputs)}

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(inputs[name], dtype=np.float32)) for name in self.input_names]
        with torch.inference_mode():
            out = self.module(*args)
        outs = out if isinstance(out, tuple | list) else [out]
        return {f"output{i}": o.numpy() for i, o in enumerate(outs)}


def set_torch_threads(args: argparse.Namespace) -> None:
    """The intra/inter-op pool sizes from tensorflow_model_server's flags, for every PyTorch runtime."""
    import torch

    if args.tensorflow_intra_op_parallelism:
        torch.set_num_threads(args.tensorflow_intra_op_parallelism)
    if args.tensorflow_inter_op_parallelism:
        torch.set_num_interop_threads(args.tensorflow_inter_op_parallelism)


def make_backend(args: argparse.Namespace) -> Backend:
    set_torch_threads(args)

    def load(path: Path) -> Servable:
        return TorchScriptServable(path)

    return load


def main(argv: list[str] | None = None) -> None:
    serve(sys.argv[1:] if argv is None else argv, make_backend)


if __name__ == "__main__":
    main()
