"""Starting the real stack the way users start it (`sagestack serve`), on free loopback ports.

Used by benchmarks, the tuner and the integration tests alike.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.loadgen import taskset_prefix

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 180


# Listening ports come from below the kernel's ephemeral range (32768-60999 by default), so an outgoing
# connection never takes one between the check and the bind.
LISTEN_PORTS = (10000, 32000)


def free_port() -> int:
    for _ in range(200):
        port = random.randrange(*LISTEN_PORTS)
        if _port_free(port):
            return port
    raise RuntimeError("no free port")


def free_port_range(size: int = 20) -> str:
    for _ in range(100):
        lo = random.randrange(LISTEN_PORTS[0], LISTEN_PORTS[1] - size, 2)
        if all(_port_free(p) for p in range(lo, lo + size)):
            return f"{lo}-{lo + size - 1}"
    raise RuntimeError("no free port range")


def free_port_outside(port_range: str, *taken: int) -> int:
    """A free port that is none of `taken` and outside `port_range` (SAGEMAKER_SAFE_PORT_RANGE's LOW-HIGH)."""
    lo, hi = (int(p) for p in port_range.split("-"))
    return next(p for p in iter(free_port, None) if p not in taken and not lo <= p <= hi)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@dataclass
class Stack:
    url: str
    proc: subprocess.Popen
    run_dir: Path
    grpc: str | None = None  # host:port of OIP v2 over gRPC, when started with grpc=True

    def routes(self) -> dict:
        return json.loads((self.run_dir / "routes.json").read_text())

    def log_lines(self) -> list[dict]:
        """The JSON lines the stack wrote to stdout so far (nginx's access log, the gateway's timings)."""
        text = (self.run_dir / "stdout.log").read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def stop(self, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def start_stack(model_dir: Path | None, run_dir: Path, cpus: str | None = None, grpc: bool = False,
                **env: str) -> Stack:  # fmt: skip
    """`sagestack serve` with these settings (and OIP v2 over gRPC on a port of its own); returns once /ping
    answers 200."""
    port, safe = free_port(), free_port_range()
    grpc_port = free_port_outside(safe, port) if grpc else None
    full_env = {
        **os.environ,
        "SAGESTACK_RUN_DIR": str(run_dir),
        "SAGESTACK_BIND_ADDRESS": "127.0.0.1",
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_SAFE_PORT_RANGE": safe,
        "SAGESTACK_NGINX_WORKERS": "1",
        **({"SAGESTACK_GRPC_PORT": str(grpc_port)} if grpc_port else {}),
        **env,
    }
    if model_dir is not None:
        full_env["SAGESTACK_MODEL_DIR"] = str(model_dir)
    argv = [*taskset_prefix(cpus), sys.executable, "-m", "server.cli", "serve"]
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "stdout.log", "ab") as stdout:  # the JSON access log, kept off the terminal
        proc = subprocess.Popen(argv, env=full_env, cwd=ROOT, stdout=stdout)
    stack = Stack(f"http://127.0.0.1:{port}", proc, run_dir, f"127.0.0.1:{grpc_port}" if grpc_port else None)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sagestack serve exited with {proc.returncode}")
        try:
            if requests.get(f"{stack.url}/ping", timeout=2).status_code == 200:
                return stack
        except requests.RequestException:  # not listening yet, or a slow first answer
            pass
        time.sleep(0.2)
    stack.stop()
    raise RuntimeError("stack did not become ready")


def demo_model_dir(work: Path) -> Path:
    """A model directory holding half_plus_three (built once under `work`), the benchmarks' shared subject."""
    from models.half_plus_three.build import build

    base = work / "model" / "half_plus_three"
    if not (base / "1" / "saved_model.pb").exists():
        build(base)
    return work / "model"
