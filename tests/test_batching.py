"""Server-side batching (SAGEMAKER_TFS_ENABLE_BATCHING=true): concurrent requests, each gets its own answer."""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from bench.stack import start_stack
from server.runtimes.batching import Batching
from server.runtimes.servable import Overloaded, is_client_error
from server.settings import Settings

pytestmark = pytest.mark.stack


def test_concurrent_requests_are_batched_and_split_back(hpt_base, tmp_path):
    stack = start_stack(
        hpt_base.parent,
        tmp_path,
        SAGEMAKER_TFS_ENABLE_BATCHING="true",
        SAGEMAKER_TFS_MAX_BATCH_SIZE="8",
        SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS="20000",
        SAGEMAKER_GUNICORN_WORKERS="2",
    )
    try:
        handed = Settings.load(tmp_path / "settings.json")  # what the runtimes were started with
        assert (handed.enable_batching, handed.max_batch_size, handed.batch_timeout_micros) == (True, 8, 20000)

        def call(i: int) -> tuple[int, list[float]]:
            body = json.dumps({"instances": [float(i), float(i) + 0.5]})
            r = requests.post(stack.url + "/invocations", data=body, headers={"Content-Type": "application/json"})
            return r.status_code, r.json()["predictions"]

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(call, range(48)))
        assert results == [(200, [0.5 * i + 3, 0.5 * (i + 0.5) + 3]) for i in range(48)]
    finally:
        assert stack.stop() == 0


@pytest.mark.parametrize("worker_class", ["gevent", "gevent_h1c", "gevent_pywsgi"])
def test_gateway_joins_concurrent_requests_and_each_gets_its_answer(hpt_base, tmp_path, worker_class):
    """Gateway batching is on by default; /metrics counts the requests each runtime call carried."""
    stack = start_stack(
        hpt_base.parent,
        tmp_path,
        SAGEMAKER_GUNICORN_WORKERS="2",
        SAGEMAKER_TFS_INSTANCE_COUNT="2",
        SAGEMAKER_GUNICORN_WORKER_CLASS=worker_class,
    )
    try:

        def call(i: int) -> tuple[int, list[float]]:
            body = json.dumps({"instances": [float(i)] * (i % 3 + 1)})
            r = requests.post(stack.url + "/invocations", data=body, headers={"Content-Type": "application/json"})
            return r.status_code, r.json()["predictions"]

        with ThreadPoolExecutor(24) as pool:
            results = list(pool.map(call, range(96)))
        assert results == [(200, [0.5 * i + 3] * (i % 3 + 1)) for i in range(96)]
        text = requests.get(stack.url + "/metrics", timeout=10).text
        found = re.search(r'sagestack_runtime_call_requests_sum\{model="half_plus_three"\} ([\d.]+)', text)
        assert found and float(found.group(1)) == 96.0
    finally:
        assert stack.stop() == 0


class CountingServable:
    """Records the batch size of every call; each row answers its own value plus one."""

    signatures: dict = {}

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.lock = threading.Lock()
        self.running = self.most_running = 0

    def run(self, signature, inputs):
        with self.lock:
            self.sizes.append(len(inputs["x"]))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        time.sleep(0.02)
        with self.lock:
            self.running -= 1
        return {"y": inputs["x"] + 1}


@pytest.mark.parametrize("threads", [1, 2])
def test_batcher_joins_rows_and_bounds_concurrent_batches(threads):
    """SAGEMAKER_TFS_MAX_BATCH_SIZE caps a batch; SAGEMAKER_TFS_NUM_BATCH_THREADS caps batches run at once."""
    servable = CountingServable()
    batcher = Batching(max_batch_size=4, timeout_micros=30000, max_enqueued=8, num_threads=threads)
    barrier = threading.Barrier(12)

    def call(i: int) -> list[float]:
        barrier.wait()
        return batcher.run(servable, "serving_default", {"x": np.array([float(i)])})["y"].tolist()

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(12)))
    assert results == [[i + 1.0] for i in range(12)]
    assert sum(servable.sizes) == 12 and max(servable.sizes) <= 4 and len(servable.sizes) < 12
    assert servable.most_running <= threads


def test_a_full_batch_queue_is_overloaded_not_a_client_error():
    """SAGEMAKER_TFS_MAX_ENQUEUED_BATCHES x MAX_BATCH_SIZE waiting: the next call is refused (a 503 upstream)."""
    servable = CountingServable()
    batcher = Batching(max_batch_size=1, timeout_micros=3_000_000, max_enqueued=2, num_threads=1)
    started = threading.Barrier(3)

    def call(i: int) -> list[float]:
        started.wait()
        return batcher.run(servable, "serving_default", {"x": np.array([float(i)])})["y"].tolist()

    with ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(call, i) for i in range(2)]
        started.wait()
        deadline = time.monotonic() + 2  # until both are queued (the leader asleep for the batch timeout)
        while time.monotonic() < deadline and sum(map(len, batcher.queues.values())) < 2:
            time.sleep(0.005)
        with pytest.raises(Overloaded, match="batch queue is full") as caught:
            batcher.run(servable, "serving_default", {"x": np.array([9.0])})
        assert not is_client_error(caught.value)
        assert sorted(f.result()[0] for f in waiting) == [1.0, 2.0]
