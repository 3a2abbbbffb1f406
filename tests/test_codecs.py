"""Body decoding, Accept negotiation and the TensorProto round trip."""

from __future__ import annotations

import io

import numpy as np
import pytest

from server import codecs
from server.protos import types_pb2
from server.tensors import (
    Signature,
    TensorError,
    TensorSpec,
    from_proto,
    predictions,
    request_to_arrays,
    to_proto,
)


def test_decode_json_shapes():
    assert codecs.decode(b"[1, 2]", codecs.JSON) == {"instances": [1, 2]}
    assert codecs.decode(b'{"inputs": {"a": 1}}', codecs.JSON) == {"inputs": {"a": 1}}
    with pytest.raises(codecs.DecodeError, match="instances"):
        codecs.decode(b'{"a": 1}', codecs.JSON)
    with pytest.raises(codecs.DecodeError, match="malformed JSON"):
        codecs.decode(b"{", codecs.JSON)


def test_decode_jsonlines_and_csv():
    assert codecs.decode(b"[1, 2]\n[3, 4]\n", codecs.JSONLINES) == {"instances": [[1, 2], [3, 4]]}
    assert codecs.decode(b"1,2.5\n3,4\n", codecs.CSV) == {"instances": [[1, 2.5], [3, 4]]}
    with pytest.raises(codecs.DecodeError, match="line 2"):
        codecs.decode(b"[1]\n{\n", codecs.JSONLINES)
    with pytest.raises(codecs.DecodeError, match="CSV line 2"):
        codecs.decode(b"1\nzz\n", codecs.CSV)


def test_decode_npy():
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.float32).reshape(2, 3))
    decoded = codecs.decode(buf.getvalue(), codecs.NPY)["inputs"]
    assert decoded.shape == (2, 3) and decoded.dtype == np.float32
    with pytest.raises(codecs.DecodeError, match="npy"):
        codecs.decode(b"not numpy", codecs.NPY)


def test_unsupported_type_and_media_type():
    assert codecs.media_type("Application/JSON; charset=utf-8") == codecs.JSON
    assert codecs.media_type(None) == codecs.JSON
    with pytest.raises(codecs.UnsupportedType):
        codecs.decode(b"x", "application/xml")


def test_negotiate_and_encode():
    assert codecs.negotiate(None) == codecs.JSON
    assert codecs.negotiate("text/html, */*;q=0.1") == codecs.JSON
    assert codecs.negotiate("text/csv;q=1, application/json") == codecs.CSV
    with pytest.raises(codecs.NotAcceptable):
        codecs.negotiate("text/html")
    result = {"predictions": [[1, 2], [3, 4]]}
    assert codecs.encode(result, codecs.CSV) == (b"1,2\n3,4\n", codecs.CSV)
    assert codecs.encode(result, codecs.JSONLINES) == (b"[1,2]\n[3,4]\n", codecs.JSONLINES)
    assert codecs.encode({"predictions": [{"a": 1, "b": [2, 3]}]}, codecs.CSV)[0] == b"1,2,3\n"


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_, np.float16])
def test_tensor_proto_round_trip(dtype):
    arr = (np.arange(12).reshape(3, 4) % 3).astype(dtype)
    back = from_proto(to_proto(arr))
    assert back.dtype == arr.dtype and np.array_equal(back, arr)


def test_string_tensor_and_typed_val_fields():
    arr = np.array([b"a", b"bc"], dtype=object)
    assert from_proto(to_proto(arr)).tolist() == [b"a", b"bc"]
    proto = to_proto(np.zeros(3, np.float32))
    proto.ClearField("tensor_content")
    proto.float_val.append(7.0)  # TF semantics: the last value repeats
    assert from_proto(proto).tolist() == [7.0, 7.0, 7.0]


def test_request_to_arrays_checks_the_signature():
    sig = Signature(
        "s",
        "tensorflow/serving/predict",
        {"a": TensorSpec("a", types_pb2.DT_FLOAT, (-1, 2)), "b": TensorSpec("b", types_pb2.DT_INT64, (-1,))},
        {"y": TensorSpec("y", types_pb2.DT_FLOAT, (-1,))},
    )
    arrays, row = request_to_arrays({"instances": [{"a": [1, 2], "b": 3}, {"a": [3, 4], "b": 5}]}, sig)
    assert row and arrays["a"].shape == (2, 2) and arrays["b"].dtype == np.int64
    with pytest.raises(TensorError, match="lack input"):
        request_to_arrays({"instances": [{"a": [1, 2]}]}, sig)
    with pytest.raises(TensorError, match="shape"):
        request_to_arrays({"inputs": {"a": [1, 2, 3], "b": [1]}}, sig)
    with pytest.raises(TensorError, match="several inputs"):
        request_to_arrays({"instances": [1, 2]}, sig)


def test_predictions_row_format():
    out = predictions({"y": np.array([1.0, 2.0]), "z": np.array([[1], [2]])})
    assert out == [{"y": 1.0, "z": [1]}, {"y": 2.0, "z": [2]}]
