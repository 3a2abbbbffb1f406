"""A runtime killed under load, and SIGTERM with requests in flight, against the real processes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bench.stack import start_stack

pytestmark = pytest.mark.stack
HANDLER = {
    "Content-Type": "application/json",
    "X-Amzn-SageMaker-Custom-Attributes": "tfs-model-name=hpt_handler",
}


class Load:
    """`concurrency` clients posting half_plus_three requests until stopped; every status code is kept."""

    def __init__(self, url: str, concurrency: int = 8) -> None:
        self.url, self.concurrency = url, concurrency
        self.stop = threading.Event()
        self.codes: list[int] = []
        self.wrong: list[str] = []
        self.pool = ThreadPoolExecutor(concurrency)
        self.futures = [self.pool.submit(self._client) for _ in range(concurrency)]

    def _client(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            r = session.post(self.url + "/invocations", data="[1.0]", headers={"Content-Type": "application/json"},
                             timeout=60)  # fmt: skip
            self.codes.append(r.status_code)
            if r.status_code != 200 or r.json() != {"predictions": [3.5]}:
                self.wrong.append(f"{r.status_code} {r.text[:200]}")

    def finish(self) -> None:
        self.stop.set()
        for f in self.futures:
            f.result()
        self.pool.shutdown()


def _wait_replaced(stack, victim: dict, timeout: float = 60) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for inst in stack.routes()["models"]["half_plus_three"]["instances"]:
            if inst["id"] == victim["id"] and inst["state"] == "ready" and inst["pid"] != victim["pid"]:
                return inst
        time.sleep(0.2)
    return None


@pytest.mark.parametrize("instances", ["1", "2"])
def test_a_runtime_killed_under_load_loses_no_request(model_dir, tmp_path, instances):
    """kill -9 of a runtime (with 1 instance: the only one) under load: requests wait for the restart."""
    stack = start_stack(model_dir, tmp_path, SAGEMAKER_TFS_INSTANCE_COUNT=instances)
    try:
        victim = stack.routes()["models"]["half_plus_three"]["instances"][0]
        load = Load(stack.url)
        try:
            time.sleep(1.0)
            before = len(load.codes)
            os.kill(victim["pid"], signal.SIGKILL)
            back = _wait_replaced(stack, victim)
            during = len(load.codes)
            time.sleep(1.0)
        finally:
            load.finish()
        assert back is not None, "the killed runtime did not come back"
        assert len(load.codes) > during > before, "requests did not go on through the restart"
        assert load.wrong == [], load.wrong[:5]
        assert requests.get(stack.url + "/ping", timeout=5).status_code == 200
    finally:
        assert stack.stop() == 0


def test_requests_get_a_503_naming_the_model_when_the_restart_outlasts_the_wait(model_dir, tmp_path):
    stack = start_stack(model_dir, tmp_path, SAGESTACK_RESTART_WAIT_SECONDS="0.5")
    try:
        victim = stack.routes()["models"]["half_plus_three"]["instances"][0]
        os.kill(victim["pid"], signal.SIGKILL)  # its restart imports TensorFlow: seconds, not 0.5
        started = time.monotonic()
        r = requests.post(stack.url + "/invocations", data="[1.0]", headers={"Content-Type": "application/json"},
                          timeout=60)  # fmt: skip
        took = time.monotonic() - started
        assert r.status_code == 503 and "half_plus_three" in r.json()["error"], r.text
        assert 0.4 < took < 10
        assert _wait_replaced(stack, victim) is not None
    finally:
        assert stack.stop() == 0


@pytest.mark.parametrize("worker_class", ["gevent", "gevent_h1c"])
def test_a_gunicorn_worker_killed_under_load_loses_no_request(model_dir, tmp_path, worker_class):
    """nginx sends a request whose worker died once more to the socket; gunicorn starts a new worker.
    Both worker classes send a response's header and body in one write, so no client is left holding
    a header whose body never comes (tests/test_gunicorn_conf.py)."""
    psutil = pytest.importorskip("psutil")
    stack = start_stack(
        model_dir, tmp_path, SAGEMAKER_GUNICORN_WORKERS="2", SAGEMAKER_GUNICORN_WORKER_CLASS=worker_class
    )
    try:
        master = next(p for p in psutil.Process(stack.proc.pid).children() if p.cmdline()[1:3] == ["-m", "gunicorn"])
        workers = master.children()
        load = Load(stack.url)
        try:
            time.sleep(1.0)
            before = len(load.codes)
            workers[0].kill()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len({w.pid for w in master.children()} - {workers[0].pid}) < 2:
                time.sleep(0.1)
            time.sleep(1.0)
        finally:
            load.finish()
        assert len(master.children()) == 2 and workers[0].pid not in {w.pid for w in master.children()}
        assert len(load.codes) > before
        assert load.wrong == [], load.wrong[:5]
    finally:
        assert stack.stop() == 0


def test_sigterm_drains_in_flight_requests(model_dir, tmp_path):
    stack = start_stack(model_dir, tmp_path, SAGEMAKER_GUNICORN_WORKERS="2")
    n = 6

    def slow(i: int) -> tuple[int, dict]:
        r = requests.post(
            stack.url + "/invocations",
            data=json.dumps({"x": [float(i)], "sleep": 2}),
            headers=HANDLER,
            timeout=30,
        )
        return r.status_code, r.json()

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(slow, i) for i in range(n)]
        deadline = time.monotonic() + 10  # until all are in flight (each sleeps 2 s in the handler)
        while time.monotonic() < deadline and f'sagestack_in_flight_requests{{model="hpt_handler"}} {n}.0' not in (
            requests.get(stack.url + "/metrics", timeout=5).text
        ):
            time.sleep(0.05)
        started = time.monotonic()
        stack.proc.send_signal(signal.SIGTERM)
        results = [f.result() for f in futures]
        code = stack.proc.wait(35)
    assert code == 0
    assert time.monotonic() - started < 30
    assert results == [(200, {"binary": [0.5 * i + 3], "version": "2"}) for i in range(n)]
    with pytest.raises(requests.ConnectionError):
        requests.get(stack.url + "/ping", timeout=2)
