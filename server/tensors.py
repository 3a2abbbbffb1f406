"""Tensors across process boundaries: numpy <-> TensorProto, and TF Serving's REST JSON <-> numpy.

Between gateway and runtimes only binary TensorProtos travel (`tensor_content` holds the raw
bytes). JSON exists only at the edge, in the shapes TF Serving's REST API defines: row format
(`instances` -> `predictions`) and columnar format (`inputs` -> `outputs`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.protos import example_pb2, meta_graph_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

_NP_BY_DT = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_HALF: np.float16,
    types_pb2.DT_INT8: np.int8,
    types_pb2.DT_INT16: np.int16,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_UINT16: np.uint16,
    types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_UINT64: np.uint64,
    types_pb2.DT_BOOL: np.bool_,
    types_pb2.DT_STRING: np.object_,
}
_DT_BY_NP = {np.dtype(v): k for k, v in _NP_BY_DT.items() if v is not np.object_}

# Which repeated field holds values when tensor_content is empty.
_VAL_FIELD = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}


class TensorError(ValueError):
    """A request's tensors do not fit the model's signature; a client error."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature, as TF Serving's metadata describes it."""

    name: str
    dtype: int
    shape: tuple[int, ...] | None  # -1 for unknown dims; None for unknown rank

    @property
    def np_dtype(self) -> Any:
        return _NP_BY_DT.get(self.dtype, np.float32)

    @classmethod
    def from_tensor_info(cls, key: str, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
        shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
        return cls(key, info.dtype, shape)


@dataclass(frozen=True)
class Signature:
    name: str
    method: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    @classmethod
    def from_def(cls, name: str, sig: meta_graph_pb2.SignatureDef) -> Signature:
        return cls(
            name,
            sig.method_name,
            {k: TensorSpec.from_tensor_info(k, v) for k, v in sig.inputs.items()},
            {k: TensorSpec.from_tensor_info(k, v) for k, v in sig.outputs.items()},
        )


def to_proto(value: Any, dtype: int | None = None) -> tensor_pb2.TensorProto:
    """Encode an array as a TensorProto; numeric data goes as one raw byte string."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    proto = tensor_pb2.TensorProto()
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in arr.shape)
    if dtype == types_pb2.DT_STRING or arr.dtype.kind in "OSU":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(_as_bytes(v) for v in arr.reshape(-1))
        return proto
    if dtype is not None and dtype in _NP_BY_DT:
        arr = arr.astype(_NP_BY_DT[dtype], copy=False)
    try:
        proto.dtype = _DT_BY_NP[arr.dtype]
    except KeyError:
        raise TensorError(f"unsupported tensor dtype {arr.dtype}") from None
    proto.tensor_content = np.ascontiguousarray(arr).tobytes()
    return proto


def from_proto(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decode a TensorProto into a numpy array (zero-copy where it carries tensor_content)."""
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    np_type = _NP_BY_DT.get(proto.dtype)
    if np_type is None:
        raise TensorError(f"unsupported TensorProto dtype {types_pb2.DataType.Name(proto.dtype)}")
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=np_type).reshape(shape)
    values = list(getattr(proto, _VAL_FIELD[proto.dtype]))
    if proto.dtype == types_pb2.DT_HALF:
        arr = np.array(values, dtype=np.uint16).view(np.float16)
    else:
        arr = np.array(values, dtype=np_type)
    size = int(np.prod(shape)) if shape else 1
    if arr.size == size:
        return arr.reshape(shape)
    if arr.size == 0:
        return np.zeros(shape, dtype=np_type)
    # TF semantics: a short value list is padded with its last value.
    return np.concatenate([arr, np.repeat(arr[-1:], size - arr.size)]).reshape(shape)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"])
    return str(value).encode("utf-8")


def _array(name: str, value: Any, spec: TensorSpec | None) -> np.ndarray:
    if spec is not None and spec.dtype == types_pb2.DT_STRING:
        return np.asarray(_decode_b64(value), dtype=object)
    try:
        arr = np.asarray(value, dtype=spec.np_dtype if spec else None)
    except (TypeError, ValueError) as exc:
        kind = types_pb2.DataType.Name(spec.dtype) if spec else "a tensor"
        raise TensorError(f"input '{name}' cannot be read as {kind}: {exc}") from None
    if arr.dtype == np.object_:
        raise TensorError(f"input '{name}' is ragged: every instance must have the same shape")
    if spec is not None and spec.shape is not None:
        check_shape(name, arr.shape, spec.shape)
    return arr


def check_shape(name: str, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    """A TensorError unless `got` fits the signature's shape `want` (-1: any size)."""
    ok = len(got) == len(want) and all(w in (-1, g) for g, w in zip(got, want, strict=True))
    if not ok:
        pretty = "[" + ", ".join("?" if w == -1 else str(w) for w in want) + "]"
        raise TensorError(f"input '{name}' has shape {list(got)}, the model expects {pretty}")


def _decode_b64(value: Any) -> Any:
    if _is_b64(value):
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    return value.encode("utf-8") if isinstance(value, str) else value


def request_to_arrays(body: Mapping[str, Any], sig: Signature) -> tuple[dict[str, np.ndarray], bool]:
    """TF Serving REST predict body -> named arrays; also says whether it was row format."""
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise TensorError("'instances' must be a non-empty list")
        names = list(sig.inputs)
        if all(isinstance(i, dict) and not _is_b64(i) for i in instances):
            missing = [n for n in names if n not in instances[0]]
            if missing:
                raise TensorError(f"instances lack input(s) {missing}; the model takes {names}")
            columns = {n: [inst.get(n) for inst in instances] for n in names}
        elif len(names) == 1:
            columns = {names[0]: instances}
        else:
            raise TensorError(f"the model takes several inputs {names}: each instance must be an object")
        return {n: _array(n, v, sig.inputs.get(n)) for n, v in columns.items()}, True
    if "inputs" in body:
        inputs = body["inputs"]
        names = list(sig.inputs)
        if isinstance(inputs, dict) and not _is_b64(inputs):
            unknown = [n for n in inputs if n not in sig.inputs]
            if unknown:
                raise TensorError(f"unknown input(s) {unknown}; the model takes {names}")
            missing = [n for n in names if n not in inputs]
            if missing:
                raise TensorError(f"missing input(s) {missing}; the model takes {names}")
            return {n: _array(n, v, sig.inputs[n]) for n, v in inputs.items()}, False
        if len(names) != 1:
            raise TensorError(f"the model takes several inputs {names}: 'inputs' must be an object")
        return {names[0]: _array(names[0], inputs, sig.inputs[names[0]])}, False
    raise TensorError("a predict request needs 'instances' or 'inputs'")


def batch_rows(inputs: Mapping[str, np.ndarray]) -> int | None:
    """The shared leading dimension of a request's inputs, or None when they have none (not batchable)."""
    sizes = {a.shape[0] if a.ndim else -1 for a in inputs.values()}
    if len(sizes) != 1 or -1 in sizes:
        return None
    return sizes.pop()


def join_batch(requests: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several requests' inputs as one request, joined along axis 0."""
    return {k: np.concatenate([r[k] for r in requests]) for k in requests[0]}


def split_batch(outputs: Mapping[str, np.ndarray], sizes: list[int]) -> list[dict[str, np.ndarray]]:
    """A joined request's outputs, cut back into one result per request (inverse of join_batch)."""
    total = sum(sizes)
    for key, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != total:
            raise TensorError(f"output '{key}' does not keep the batch dimension; it cannot be split")
    out, offset = [], 0
    for size in sizes:
        out.append({k: v[offset : offset + size] for k, v in outputs.items()})
        offset += size
    return out


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _jsonable(arr: np.ndarray) -> Any:
    if arr.dtype == np.object_:
        return _bytes_to_json(arr.tolist())
    return arr.tolist()


def _bytes_to_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_bytes_to_json(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def predictions(outputs: Mapping[str, np.ndarray]) -> list[Any]:
    """Row format: one prediction per instance (a dict when the model has several outputs)."""
    if len(outputs) == 1:
        return _jsonable(next(iter(outputs.values())))
    columns = {k: _jsonable(v) for k, v in outputs.items()}
    sizes = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise TensorError("outputs do not share a batch dimension; use the columnar 'inputs' format")
    n = sizes.pop()
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def columnar(outputs: Mapping[str, np.ndarray]) -> Any:
    if len(outputs) == 1:
        return _jsonable(next(iter(outputs.values())))
    return {k: _jsonable(v) for k, v in outputs.items()}


def examples_to_protos(examples: Any) -> list[example_pb2.Example]:
    """JSON examples ({"feature": value|[values]}) -> tf.Example protos for classify/regress."""
    if not isinstance(examples, list) or not examples:
        raise TensorError("'examples' must be a non-empty list of objects")
    out = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict):
            raise TensorError(f"example {i} is not an object")
        proto = example_pb2.Example()
        for key, value in ex.items():
            values = value if isinstance(value, list) else [value]
            feature = proto.features.feature[key]
            if all(isinstance(v, bool) or isinstance(v, int) for v in values):
                feature.int64_list.value.extend(int(v) for v in values)
            elif all(isinstance(v, int | float) for v in values):
                feature.float_list.value.extend(float(v) for v in values)
            elif all(isinstance(v, str) or _is_b64(v) for v in values):
                feature.bytes_list.value.extend(_as_bytes(v) for v in values)
            else:
                raise TensorError(f"example {i} feature '{key}' mixes value types")
        out.append(proto)
    return out


__all__ = [
    "Signature",
    "TensorError",
    "TensorSpec",
    "batch_rows",
    "columnar",
    "examples_to_protos",
    "from_proto",
    "join_batch",
    "predictions",
    "request_to_arrays",
    "split_batch",
    "to_proto",
]
