"""TF Serving protos and gRPC stubs, without importing TensorFlow.

The generated modules in `tensorflow-serving-api` import `tensorflow.core.framework.*_pb2`.
Importing those the normal way runs `tensorflow/__init__.py`, which costs ~1.6 s and ~600 MB
per gateway worker. Here the `tensorflow` package is stood in by a bare namespace module that
points at the real package directory while the `*_pb2` files load, and is removed afterwards,
so a later `import tensorflow` (in a runtime server) still gets the real package and shares
these very modules.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def _load() -> None:
    if "tensorflow" in sys.modules:
        return _import_all()
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("tensorflow-cpu is not installed; its protos are needed")
    shim = types.ModuleType("tensorflow")
    shim.__path__ = list(spec.submodule_search_locations)
    sys.modules["tensorflow"] = shim
    try:
        _import_all()
    finally:
        if sys.modules.get("tensorflow") is shim:
            del sys.modules["tensorflow"]


def _import_all() -> None:
    import tensorflow.core.example.example_pb2
    import tensorflow.core.framework.tensor_pb2
    import tensorflow.core.framework.types_pb2
    import tensorflow.core.protobuf.meta_graph_pb2  # noqa: F401
    import tensorflow_serving.apis.classification_pb2
    import tensorflow_serving.apis.get_model_metadata_pb2
    import tensorflow_serving.apis.get_model_status_pb2
    import tensorflow_serving.apis.model_management_pb2
    import tensorflow_serving.apis.model_service_pb2_grpc
    import tensorflow_serving.apis.predict_pb2
    import tensorflow_serving.apis.prediction_service_pb2_grpc
    import tensorflow_serving.apis.regression_pb2
    import tensorflow_serving.config.model_server_config_pb2  # noqa: F401


_load()

from tensorflow.core.example import example_pb2, feature_pb2  # noqa: E402
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

# sagestack's one addition to TF Serving's API: Predict whose outputs come back in parts as the model makes them
# (PredictRequest in, a stream of PredictResponse out: TF Serving's own messages, so no generated code of ours).
PREDICT_STREAM = "/sagestack.StreamingPredictionService/PredictStream"

__all__ = [
    "PREDICT_STREAM",
    "classification_pb2",
    "example_pb2",
    "feature_pb2",
    "get_model_metadata_pb2",
    "get_model_status_pb2",
    "input_pb2",
    "meta_graph_pb2",
    "model_management_pb2",
    "model_pb2",
    "model_server_config_pb2",
    "model_service_pb2_grpc",
    "predict_pb2",
    "prediction_service_pb2_grpc",
    "regression_pb2",
    "tensor_pb2",
    "tensor_shape_pb2",
    "types_pb2",
]
