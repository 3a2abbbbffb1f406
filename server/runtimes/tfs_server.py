"""TF-Serving-compatible server for SavedModels, used where `tensorflow_model_server` is not on PATH.

`python -m server.runtimes.tfs_server --port=G --rest_api_port=R --model_config_file=F ...`
takes the real binary's flags, so the gateway never knows which of the two it talks to.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from server.runtimes.model_server import Backend, Servable, serve
from server.tensors import Signature


class SavedModelServable:
    """One SavedModel version; signatures (with their method names) come from saved_model.pb."""

    def __init__(self, path: Path) -> None:
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self._tf = tf
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        defs = proto.meta_graphs[0].signature_def
        self.model = tf.saved_model.load(str(path))
        self.signatures: dict[str, Signature] = {
            k: Signature.from_def(k, v) for k, v in defs.items() if not k.startswith("__")
        }
        self._fns = {k: self.model.signatures[k] for k in self.signatures}

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        result = self._fns[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in result.items()}


def make_backend(args: argparse.Namespace) -> Backend:
    import tensorflow as tf

    if args.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    if args.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    for gpu in tf.config.list_physical_devices("GPU"):
        # Several instances share a GPU: grow on demand instead of grabbing it all.
        tf.config.experimental.set_memory_growth(gpu, True)

    def load(path: Path) -> Servable:
        return SavedModelServable(path)

    return load


def main(argv: list[str] | None = None) -> None:
    serve(sys.argv[1:] if argv is None else argv, make_backend)


if __name__ == "__main__":
    main()
