"""TF-Serving-compatible server for TVM artifacts made by `sagestack compile` (a Relax VM over model.so).

TVM's thread pool takes its size from TVM_NUM_THREADS when the library loads, so the intra-op
setting is applied there; SAGEMAKER_TFS_INTRA_OP_PARALLELISM (or OMP_NUM_THREADS) sets it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from server.protos import types_pb2
from server.runtimes.model_server import PREDICT, Backend, Servable, serve
from server.tensors import Signature, TensorSpec


class TvmServable:
    def __init__(self, path: Path, threads: int) -> None:
        from compiler.tvm_backend import Runner

        meta = json.loads((path / "compiled" / "metadata.json").read_text())
        self.runner = Runner(path / "compiled" / meta["artifact"], threads)
        self.input_names = list(meta["inputs"])
        self.output_names = meta.get("outputs", ["output0"])
        inputs = {n: TensorSpec(n, types_pb2.DT_FLOAT, tuple(s)) for n, s in meta["inputs"].items()}
        outputs = {n: TensorSpec(n, types_pb2.DT_FLOAT, None) for n in self.output_names}
        self.signatures = {"serving_default": Signature("serving_default", PREDICT, inputs, outputs)}

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(inputs[self.input_names[0]], dtype=np.float32)
        return dict(zip(self.output_names, self.runner(x), strict=True))


def make_backend(args: argparse.Namespace) -> Backend:
    def load(path: Path) -> Servable:
        return TvmServable(path, args.tensorflow_intra_op_parallelism)

    return load


def main(argv: list[str] | None = None) -> None:
    serve(sys.argv[1:] if argv is None else argv, make_backend)


if __name__ == "__main__":
    main()
