"""The Open Inference Protocol (KServe v2) over REST: its tensors to and from numpy, with Triton's binary extension.

A request is JSON `{"id", "parameters", "inputs": [{"name", "shape", "datatype", "data", "parameters"}], "outputs":
[{"name", "parameters": {"binary_data"}}]}`. With `Inference-Header-Content-Length: N` the body's first N bytes are
that JSON and the rest are the inputs' bytes, in order, each `parameters.binary_data_size` long (row-major, little
endian; BYTES as 4-byte little-endian lengths, each followed by its bytes, as Triton sends them). An answer goes out
the same way when any output asks for `binary_data` (or the request's `binary_data_output`). Every mistake is a
V2Error naming the tensor.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.tensors import TensorSpec

HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}  # fmt: skip
_BY_NUMPY = {np.dtype(v): k for k, v in DATATYPES.items() if v is not np.object_}


class V2Error(ValueError):
    """A client mistake in a v2 request; the message names it."""


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[str]  # asked for by name; empty: all
    binary: set[str]  # outputs to send as binary
    binary_all: bool  # parameters.binary_data_output


def datatype(dtype: np.dtype) -> str:
    if dtype.kind in "OSU":
        return "BYTES"
    try:
        return _BY_NUMPY[np.dtype(dtype)]
    except KeyError:
        raise V2Error(f"no v2 datatype for {dtype}") from None


def parse(body: bytes, header_length: str | None) -> InferRequest:
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise V2Error(f"{HEADER_LENGTH}: {header_length!r} is not a number") from None
        if not 0 <= n <= len(body):
            raise V2Error(f"{HEADER_LENGTH}: {n} is outside the body's {len(body)} bytes")
        head, rest = body[:n], memoryview(body)[n:]
    else:
        head, rest = body, memoryview(b"")
    try:
        doc = json.loads(head)
    except (ValueError, UnicodeDecodeError):
        raise V2Error("the request is not JSON (or its header length is wrong)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise V2Error('the request must be an object with "inputs": [{"name", "shape", "datatype", "data"}]')
    inputs: dict[str, np.ndarray] = {}
    at = 0
    for i, tensor in enumerate(doc["inputs"]):
        array, used = _input(i, tensor, rest[at:])
        at += used
        inputs[tensor["name"]] = array
    if at != len(rest):
        raise V2Error(f"{len(rest) - at} bytes of binary data are left over after the inputs")
    outputs, binary = [], set()
    for i, out in enumerate(doc.get("outputs") or []):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise V2Error(f"outputs[{i}] must be an object with a name")
        outputs.append(out["name"])
        if _parameters(out, f"outputs[{i}]").get("binary_data"):
            binary.add(out["name"])
    rid = doc.get("id")
    binary_all = bool(_parameters(doc, "the request").get("binary_data_output"))
    return InferRequest(rid if isinstance(rid, str) else None, inputs, outputs, binary, binary_all)


def _parameters(doc: dict, where: str) -> dict:
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise V2Error(f"{where}: parameters must be an object")
    return params


def _input(i: int, tensor: Any, rest: memoryview) -> tuple[np.ndarray, int]:
    """One input tensor, and how many binary bytes it took."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise V2Error(f"inputs[{i}] must be an object with a name")
    name = tensor["name"]
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise V2Error(f"input '{name}': shape must be a list of non-negative integers")
    kind = tensor.get("datatype")
    if kind not in DATATYPES:
        raise V2Error(f"input '{name}': datatype {kind!r} is not supported (supported: {', '.join(DATATYPES)})")
    count = math.prod(shape)  # Python ints: a huge shape cannot wrap to a small count
    size = _parameters(tensor, f"input '{name}'").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or not 0 <= size <= len(rest):
            raise V2Error(f"input '{name}': binary_data_size {size!r} is not within the binary data sent")
        return from_bytes(name, bytes(rest[:size]), kind, shape, count), size
    if "data" not in tensor:
        raise V2Error(f"input '{name}' has neither data nor parameters.binary_data_size")
    flat = np.asarray(tensor["data"], dtype=object).reshape(-1)
    if flat.size != count:
        raise V2Error(f"input '{name}': {flat.size} values for shape {shape}")
    if kind == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise V2Error(f"input '{name}': BYTES data must be strings")
        return np.array([v.encode() for v in flat], dtype=object).reshape(shape), 0
    try:
        return np.asarray(flat.tolist(), dtype=DATATYPES[kind]).reshape(shape), 0
    except (TypeError, ValueError, OverflowError):
        raise V2Error(f"input '{name}': data is not {kind}") from None


def from_bytes(name: str, raw: bytes, kind: str, shape: list[int], count: int) -> np.ndarray:
    if kind == "BYTES":
        items, at = [], 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise V2Error(f"input '{name}': a BYTES element's length is cut off")
            (n,) = struct.unpack_from("<I", raw, at)
            if at + 4 + n > len(raw):
                raise V2Error(f"input '{name}': a BYTES element runs past its data")
            items.append(raw[at + 4 : at + 4 + n])
            at += 4 + n
        if len(items) != count:
            raise V2Error(f"input '{name}': {len(items)} BYTES elements for shape {shape}")
        return np.array(items, dtype=object).reshape(shape)
    dtype = np.dtype(DATATYPES[kind]).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        expected = count * dtype.itemsize
        raise V2Error(f"input '{name}': {len(raw)} bytes for shape {shape} of {kind} ({expected} expected)")
    return np.frombuffer(raw, dtype=dtype).astype(DATATYPES[kind]).reshape(shape)


def to_bytes(array: np.ndarray) -> bytes:
    if array.dtype.kind in "OSU":
        parts = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        return b"".join(struct.pack("<I", len(p)) + p for p in parts)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()


def selected(model: str, request: InferRequest, outputs: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """The outputs the request asks for (all, by name, when it names none), or a V2Error naming a missing one."""
    names = request.outputs or sorted(outputs)
    unknown = [n for n in names if n not in outputs]
    if unknown:
        raise V2Error(f"model '{model}' has no output {', '.join(map(repr, unknown))} (has: "
                      f"{', '.join(sorted(outputs))})")  # fmt: skip
    return [(name, np.asarray(outputs[name])) for name in names]


def answer(model: str, version: str, request: InferRequest, outputs: dict[str, np.ndarray]) -> tuple[bytes, int | None]:
    """The infer answer and, when it carries binary tensors, the length of its JSON header."""
    tensors, blobs = [], []
    for name, array in selected(model, request, outputs):
        tensor: dict[str, Any] = {"name": name, "datatype": datatype(array.dtype), "shape": list(array.shape)}
        if request.binary_all or name in request.binary:
            blob = to_bytes(array)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif array.dtype.kind in "OSU":
            flat = array.reshape(-1)
            tensor["data"] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
        else:
            tensor["data"] = array.reshape(-1).tolist()
        tensors.append(tensor)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": tensors}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc).encode()
    return (head + b"".join(blobs), len(head)) if blobs else (head, None)


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    """One input or output in v2 model metadata (-1 for a dimension of any size)."""
    shape = list(spec.shape) if spec.shape is not None else [-1]
    return {"name": spec.name, "datatype": datatype(np.dtype(spec.np_dtype)), "shape": shape}
