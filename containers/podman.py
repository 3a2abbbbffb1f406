"""podman as this project runs it: the containers.conf that `make image` writes (runc, no default ulimits)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "build" / "image" / "containers.conf"


def podman(*args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTAINERS_CONF": str(CONF)}
    return subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, check=check, timeout=timeout, **kwargs
    )


def wait_for_ping(url: str, alive: Callable[[], bool] = lambda: True, timeout: float = 420) -> float:
    """Seconds until a container's /ping says 200; raises when `alive()` turns false or the time runs out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if requests.get(url + "/ping", timeout=2).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        if not alive():
            raise RuntimeError("the container stopped before /ping said 200")
        time.sleep(1)
    raise TimeoutError(f"/ping not 200 after {timeout:.0f} s")
