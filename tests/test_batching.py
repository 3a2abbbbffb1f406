"""Server-side batching (SAGEMAKER_TFS_ENABLE_BATCHING=true): concurrent requests, each gets its own answer."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bench.stack import start_stack

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
        config = (tmp_path / "runtimes" / "half_plus_three-0.batching").read_text()
        assert "max_batch_size { value: 8 }" in config and "batch_timeout_micros { value: 20000 }" in config

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
