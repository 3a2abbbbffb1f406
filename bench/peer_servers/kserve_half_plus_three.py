"""The half_plus_three SavedModel on KServe's Python ModelServer (run with the KServe venv's python).

The same SavedModel our runtimes serve, loaded in-process with TensorFlow, so the comparison is
server against server on one model. It answers KServe's v1 (`/v1/models/m:predict`) and its v2
(`/v2/models/m/infer`, where the payload arrives as an InferRequest and leaves as an InferResponse).
"""

import argparse

import kserve
import numpy as np
import tensorflow as tf


class SavedModel(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.fn = None

    def load(self) -> bool:
        # KServe pickles the model into each worker process, so TensorFlow objects load there, lazily.
        self.ready = True
        return True

    def predict(self, payload, headers=None):
        if self.fn is None:
            self.fn = tf.saved_model.load(self.path).signatures["serving_default"]
        if isinstance(payload, kserve.InferRequest):
            y = self.fn(x=tf.constant(payload.inputs[0].as_numpy().astype(np.float32)))["y"].numpy()
            out = kserve.InferOutput("y", list(y.shape), "FP32")
            out.set_data_from_numpy(y, binary_data=False)
            return kserve.InferResponse(payload.id or "", self.name, [out])
        x = np.asarray(payload["instances"], dtype=np.float32)
        return {"predictions": self.fn(x=tf.constant(x))["y"].numpy().tolist()}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--model-path", required=True, help="a SavedModel version directory")
    args = p.parse_args()
    model = SavedModel("half_plus_three", args.model_path)
    model.load()
    kserve.ModelServer(http_port=args.port, workers=args.workers, enable_grpc=False).start([model])
