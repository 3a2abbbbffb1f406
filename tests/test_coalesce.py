"""Gateway batching (server.coalesce) with real threads: who is joined, how results and errors come back."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from server.coalesce import Coalescer, batch_key
from server.errors import ApiError
from server.protos import types_pb2
from server.tensors import Signature, TensorSpec

FLOAT = types_pb2.DT_FLOAT


def sig(shape: tuple[int, ...] | None) -> Signature:
    return Signature("serving_default", "tensorflow/serving/predict", {"x": TensorSpec("x", FLOAT, shape)}, {})


class Runtime:
    """A model behind `call`: y = 2x. The first call is held until `release`, so others queue behind it."""

    def __init__(self, refuse_negative: bool = False, drop_batch_dim: bool = False) -> None:
        self.calls: list[int] = []
        self.release = threading.Event()
        self.refuse_negative = refuse_negative
        self.drop_batch_dim = drop_batch_dim

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.calls.append(len(x))
        if len(self.calls) == 1:
            assert self.release.wait(10)
        if self.refuse_negative and (x < 0).any():
            raise ApiError(400, "negative input")
        if self.drop_batch_dim:
            return {"y": np.array(float(x.sum()))}
        return {"y": 2 * x}


def run_concurrently(coalescer: Coalescer, runtime: Runtime, inputs: list[np.ndarray], limit: int = 1):
    key = batch_key("m", None, sig((-1, 2)), {"x": inputs[0]})

    def one(x: np.ndarray):
        try:
            return coalescer.run(key, {"x": x}, limit, runtime)["y"]
        except ApiError as exc:
            return exc

    with ThreadPoolExecutor(len(inputs)) as pool:
        first = pool.submit(one, inputs[0])
        while not runtime.calls:
            time.sleep(0.001)
        rest = [pool.submit(one, x) for x in inputs[1:]]
        while sum(len(w.waiting) for w in coalescer._lanes.values()) < len(rest):
            time.sleep(0.001)
        runtime.release.set()
        return [first.result(10)] + [f.result(10) for f in rest]


def rows(n: int, value: float) -> np.ndarray:
    return np.full((n, 2), value, dtype=np.float32)


def test_requests_waiting_behind_a_call_go_out_as_one_and_are_split_back():
    seen = []
    coalescer = Coalescer(max_rows=32, observe=lambda key, n: seen.append(n))
    runtime = Runtime()
    inputs = [rows(1, 0.0)] + [rows(i % 3 + 1, float(i)) for i in range(1, 9)]
    results = run_concurrently(coalescer, runtime, inputs)
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, 2 * x)
    assert runtime.calls == [1, sum(len(x) for x in inputs[1:])]
    assert seen == [1, 8]


def test_batches_respect_the_row_limit():
    coalescer = Coalescer(max_rows=4)
    runtime = Runtime()
    inputs = [rows(1, 0.0)] + [rows(2, float(i)) for i in range(1, 6)]
    results = run_concurrently(coalescer, runtime, inputs)
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, 2 * x)
    assert runtime.calls == [1, 4, 4, 2]


def test_a_refused_request_fails_alone():
    runtime = Runtime(refuse_negative=True)
    inputs = [rows(1, 0.0), rows(1, 1.0), rows(1, -1.0), rows(1, 2.0)]
    results = run_concurrently(Coalescer(max_rows=32), runtime, inputs)
    assert isinstance(results[2], ApiError) and results[2].status == 400
    for i in (0, 1, 3):
        np.testing.assert_array_equal(results[i], 2 * inputs[i])
    assert runtime.calls == [1, 3, 1, 1, 1]  # the joined call, then one by one


def test_outputs_without_a_batch_dimension_stop_joining_for_that_model():
    coalescer = Coalescer(max_rows=32)
    runtime = Runtime(drop_batch_dim=True)
    inputs = [rows(1, 1.0), rows(1, 2.0), rows(1, 3.0)]
    results = run_concurrently(coalescer, runtime, inputs)
    assert [float(y) for y in results] == [2.0, 4.0, 6.0]
    assert runtime.calls == [1, 2, 1, 1]
    assert coalescer._unsplittable


def test_unavailable_runtime_fails_the_whole_batch_without_retrying():
    class Down(Runtime):
        def __call__(self, inputs):
            super().__call__(inputs)
            raise ApiError(503, "no instance")

    runtime = Down()
    results = run_concurrently(Coalescer(max_rows=32), runtime, [rows(1, 0.0), rows(1, 1.0), rows(1, 2.0)])
    assert all(isinstance(r, ApiError) and r.status == 503 for r in results)
    assert runtime.calls == [1, 2]


def test_calls_in_flight_up_to_the_instance_count_are_not_joined():
    runtime = Runtime()
    runtime.release.set()
    coalescer = Coalescer(max_rows=32)
    key = batch_key("m", None, sig((-1,)), {"x": np.zeros(1, np.float32)})
    out = coalescer.run(key, {"x": np.ones(1, np.float32)}, 2, runtime)
    np.testing.assert_array_equal(out["y"], [2.0])
    assert coalescer._lanes == {}  # the slot was freed


@pytest.mark.parametrize(
    ("shape", "value", "joinable"),
    [
        ((-1, 2), np.zeros((1, 2), np.float32), True),
        ((1, -1), np.zeros((1, 2), np.float32), False),  # fixed batch of one (the music model)
        (None, np.zeros((1, 2), np.float32), False),  # unknown rank
        ((-1, 2), [[0.0, 0.0]], False),  # not an array (a handler's own inputs)
        ((-1,), np.float32(1.0), False),  # a scalar has no rows
    ],
)
def test_batch_key(shape, value, joinable):
    assert (batch_key("m", None, sig(shape), {"x": value}) is not None) is joinable


def test_batch_key_separates_layouts():
    a = batch_key("m", None, sig((-1, -1)), {"x": np.zeros((1, 2), np.float32)})
    b = batch_key("m", None, sig((-1, -1)), {"x": np.zeros((1, 3), np.float32)})
    c = batch_key("m", 2, sig((-1, -1)), {"x": np.zeros((1, 2), np.float32)})
    assert len({a, b, c}) == 3


def test_size_one_turns_batching_off():
    runtime = Runtime()
    runtime.release.set()
    key = batch_key("m", None, sig((-1,)), {"x": np.zeros(1, np.float32)})
    Coalescer(max_rows=1).run(key, {"x": np.ones(1, np.float32)}, 1, runtime)
    assert runtime.calls == [1]
