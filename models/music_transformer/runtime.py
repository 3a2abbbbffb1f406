"""The music transformer's backend (runtime "music_transformer"): the whole generation loop runs in the runtime.

A version directory holds `model.pt` (weights + config) and `compiled/metadata.json`
(`{"runtime": "music_transformer", "artifact": "model.pt"}`). The `serving_default` signature takes
the context tokens and the DeepComposer parameters as tensors and returns the generated tokens, so
one Predict call extends a melody: no process boundary is crossed per token, and the KV cache
stays in this process for the length of the call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from server.modeldir import read_metadata
from server.protos import types_pb2
from server.runtimes.servable import PREDICT, Backend, RuntimeOptions, Servable
from server.tensors import Signature, TensorSpec


def signature() -> Signature:
    from models.music_transformer.params import FLOAT_PARAMS, INT_PARAMS

    inputs = {"tokens": TensorSpec("tokens", types_pb2.DT_INT32, (1, -1))}
    inputs["sampling"] = TensorSpec("sampling", types_pb2.DT_STRING, (1,))
    inputs |= {n: TensorSpec(n, types_pb2.DT_FLOAT, (1,)) for n in FLOAT_PARAMS}
    inputs |= {n: TensorSpec(n, types_pb2.DT_INT32, (1,)) for n in INT_PARAMS}
    outputs = {"tokens": TensorSpec("tokens", types_pb2.DT_INT32, (1, -1))}
    return Signature("serving_default", PREDICT, inputs, outputs)


class MusicServable:
    """With SAGEMAKER_TFS_ENABLE_BATCHING, concurrent extensions share decoding steps (continuous batching,
    up to SAGEMAKER_TFS_MAX_BATCH_SIZE at once); the server's own row-joining batcher is bypassed."""

    def __init__(self, path: Path, max_batch: int = 0) -> None:
        from models.music_transformer.batching import BatchedGenerator
        from models.music_transformer.model import load

        meta = read_metadata(path)
        self.model = load(path / meta.get("artifact", "model.pt"))
        self.signatures = {"serving_default": signature()}
        self.warmup_inputs = {"serving_default": warmup_request()}
        self.generator = BatchedGenerator(self.model, max_batch) if max_batch > 0 else None

    @property
    def batches_itself(self) -> bool:
        return self.generator is not None

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        generated = list(self._tokens(inputs))
        return {"tokens": np.asarray(generated, dtype=np.int32)[None, :]}

    def run_stream(self, signature: str, inputs: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """The generated tokens in parts ([1, n] tokens), each ending where a note ends (a NOTE_OFF is sampled):
        a client hears each note as soon as it is complete, long before the extension is, at one message per
        note rather than per token."""
        from models.music_transformer.tokens import NOTE_OFF, TIME_SHIFT

        part: list[int] = []
        with contextlib.closing(self._tokens(inputs)) as tokens:
            for token in tokens:
                part.append(token)
                if NOTE_OFF <= token < TIME_SHIFT:
                    yield {"tokens": np.asarray([part], dtype=np.int32)}
                    part = []
        if part:
            yield {"tokens": np.asarray([part], dtype=np.int32)}

    def _tokens(self, inputs: dict[str, np.ndarray]) -> Iterator[int]:
        from models.music_transformer.generate import stream_tokens
        from models.music_transformer.params import from_tensors

        params = from_tensors(inputs)  # a ParameterError is a ValueError: INVALID_ARGUMENT, a 400 at the gateway
        context = inputs["tokens"].reshape(-1).tolist()
        if self.generator is not None:
            return self.generator.extend_stream(context, params)
        return stream_tokens(self.model, context, params)


def warmup_request() -> dict[str, np.ndarray]:
    """A one-second extension of a C major scale: loads the kernels and sizes the cache."""
    from models.music_transformer.params import Params, as_tensors
    from models.music_transformer.tokens import Note, encode

    scale = [Note(i * 0.25, i * 0.25 + 0.2, pitch, 80) for i, pitch in enumerate((60, 62, 64, 65, 67, 69, 71, 72))]
    return {"tokens": np.asarray([encode(scale)], dtype=np.int32), **as_tensors(Params(extension_duration=1.0))}


def make_backend(options: RuntimeOptions) -> Backend:
    options.set_torch_threads()

    def load(path: Path) -> Servable:
        return MusicServable(path, options.max_batch_size)

    return load
