"""The contract between the model server and a backend: a loaded version (`Servable`), and the options a backend
is built with. A runtime is one `make_backend(options) -> Backend` function; everything else is the model server's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from server.tensors import Signature

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
PREDICT = "tensorflow/serving/predict"
DEFAULT_SIGNATURE = "serving_default"


class Servable(Protocol):
    """A loaded model version: its signatures and a way to run one.

    A servable with a true `batches_itself` attribute schedules concurrent calls on its own (the music
    transformer's continuous batching), so SAGEMAKER_TFS_ENABLE_BATCHING's row-joining batcher leaves it alone.
    One with a `run_stream(signature, inputs)` method yields its outputs in parts as it makes them (PredictStream);
    closing that iterator stops the work. Any other servable streams as one part.
    """

    signatures: dict[str, Signature]

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


Backend = Callable[[Path], Servable]


@dataclass(frozen=True)
class RuntimeOptions:
    """What a backend is built with: tensorflow_model_server's thread flags and the validated batching settings."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    max_batch_size: int = 0  # 0: SAGEMAKER_TFS_ENABLE_BATCHING is off

    def set_torch_threads(self) -> None:
        """The intra/inter-op pool sizes, for every PyTorch runtime."""
        import torch

        if self.intra_op_threads:
            torch.set_num_threads(self.intra_op_threads)
        if self.inter_op_threads:
            torch.set_num_interop_threads(self.inter_op_threads)


BackendFactory = Callable[[RuntimeOptions], Backend]


class NotFound(LookupError):
    """Unknown model, version or signature (gRPC NOT_FOUND, HTTP 404)."""


class Overloaded(RuntimeError):
    """The runtime cannot take more work now, e.g. the batch queue is full (RESOURCE_EXHAUSTED, HTTP 503)."""


def is_client_error(exc: BaseException) -> bool:
    """A bad request rather than a broken model: our TensorError/ValueError, or TF's InvalidArgument/OutOfRange."""
    return isinstance(exc, ValueError) or type(exc).__name__ in ("InvalidArgumentError", "OutOfRangeError")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__
