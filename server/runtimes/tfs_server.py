"""The SavedModel backend (runtime "tensorflow"), used where `tensorflow_model_server` is not on PATH.

The model server (model_server.py) takes the real binary's flags, so the gateway never knows which of the two
it talks to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from server.runtimes.servable import Backend, RuntimeOptions, Servable
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


def make_backend(options: RuntimeOptions) -> Backend:
    import tensorflow as tf

    if options.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(options.intra_op_threads)
    if options.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(options.inter_op_threads)
    for gpu in tf.config.list_physical_devices("GPU"):
        # Several instances share a GPU: grow on demand instead of grabbing it all.
        tf.config.experimental.set_memory_growth(gpu, True)

    def load(path: Path) -> Servable:
        return SavedModelServable(path)

    return load
