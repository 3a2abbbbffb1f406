"""TF Serving's example model, y = 0.5 * x + 3, as a SavedModel with predict, classify and regress.

It is the stack's demo and test model. Each version may use its own offset, so tests can tell
versions apart. Classify/regress signatures take serialized tf.Examples (feature `x`) and carry
TF Serving's method names, as TF1 estimators exported them, so the real tensorflow_model_server
serves them too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from server import modeldir
from server.runtimes.servable import CLASSIFY, REGRESS


def build(root: Path, versions: dict[int, float] | None = None) -> Path:
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    versions = versions or {1: 3.0}

    class HalfPlus(tf.Module):
        def __init__(self, offset: float) -> None:
            super().__init__()
            self.a = tf.Variable(0.5, dtype=tf.float32)
            self.b = tf.Variable(offset, dtype=tf.float32)

        def _from_examples(self, serialized):
            feats = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
            return self.a * feats["x"] + self.b

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": self._from_examples(inputs)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            return {"scores": self._from_examples(inputs)}

    for version, offset in versions.items():
        path = modeldir.fresh_version(root, version)
        module = HalfPlus(offset)
        signatures = {
            "serving_default": module.predict,
            "regress_x_to_y": module.regress,
            "classify_x_to_y": module.classify,
        }
        tf.saved_model.save(module, str(path), signatures=signatures)
        pb = path / "saved_model.pb"
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString(pb.read_bytes())
        defs = proto.meta_graphs[0].signature_def
        defs["regress_x_to_y"].method_name = REGRESS
        defs["classify_x_to_y"].method_name = CLASSIFY
        pb.write_bytes(proto.SerializeToString())
    return root


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="build the half_plus_three demo SavedModel")
    p.add_argument("--out", type=Path, default=Path("build/model/half_plus_three"))
    args = p.parse_args(argv)
    print(f"built {build(args.out)}")


if __name__ == "__main__":
    main()
