"""The TorchScript backend (runtime "torchscript"): the uncompiled PyTorch path, served by the model server.

A version directory holds the artifact as SageMaker Neo receives it, `model.tar.gz` with a traced
`model.pth` inside, and `compiled/metadata.json` naming this runtime and the input shapes
(`{"runtime": "torchscript", "artifact": "model.tar.gz", "inputs": {"input0": [1, 3, 416, 416]}}`).
One signature, `serving_default`, maps the named inputs, in order, to `output0`, `output1`, ...
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler.artifact import load_traced
from server.modeldir import read_metadata
from server.protos import types_pb2
from server.runtimes.servable import PREDICT, Backend, RuntimeOptions, Servable
from server.tensors import Signature, TensorSpec


class TorchScriptServable:
    def __init__(self, path: Path) -> None:
        import torch

        meta = read_metadata(path)
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


def make_backend(options: RuntimeOptions) -> Backend:
    options.set_torch_threads()

    def load(path: Path) -> Servable:
        return TorchScriptServable(path)

    return load
