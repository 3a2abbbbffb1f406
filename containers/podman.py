"""podman as this project runs it: the containers.conf that `make image` writes (runc, no default ulimits)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "build" / "image" / "containers.conf"


def podman(*args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTAINERS_CONF": str(CONF)}
    return subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, check=check, timeout=timeout, **kwargs
    )
