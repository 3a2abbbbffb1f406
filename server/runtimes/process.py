"""One runtime process as the supervisor sees it: start, readiness, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import grpc

from server.protos import get_model_status_pb2, model_service_pb2_grpc
from server.runtimes import command, model_config
from server.settings import Settings

AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.State.END


class RuntimeInstance:
    def __init__(
        self, model: str, kind: str, base_path: Path, index: int, ports: tuple[int, int], settings: Settings
    ) -> None:
        self.model, self.kind, self.base_path = model, kind, base_path
        self.id = f"{model}-{index}"
        self.grpc_port, self.rest_port = ports
        self.settings = settings
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.started_at = 0.0

    def start(self) -> None:
        config = self.settings.run_dir / "runtimes" / f"{self.id}.config"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(model_config(self.model, self.base_path))
        argv = command(self.kind, self.grpc_port, self.rest_port, config, self.settings)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(self.settings.omp_num_threads),
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            "PYTHONUNBUFFERED": "1",
        }
        # Own session: a terminal's Ctrl-C goes to the supervisor, which stops children in order.
        self.proc = subprocess.Popen(argv, env=env, start_new_session=True)
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def status(self) -> tuple[bool, str]:
        """(ready, detail): ready once every version is AVAILABLE (or failed, with one AVAILABLE)."""
        try:
            with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
                stub = model_service_pb2_grpc.ModelServiceStub(channel)
                request = get_model_status_pb2.GetModelStatusRequest()
                request.model_spec.name = self.model
                response = stub.GetModelStatus(request, timeout=2)
        except grpc.RpcError as exc:
            return False, f"not answering yet ({exc.code().name})"
        states = [s.state for s in response.model_version_status]
        settled = all(s in (AVAILABLE, END) for s in states)
        errors = [s.status.error_message for s in response.model_version_status if s.status.error_message]
        if settled and AVAILABLE not in states:
            return False, "every version failed to load: " + "; ".join(errors)
        return settled and AVAILABLE in states, f"states {states}"

    def wait_ready(self, deadline: float) -> None:
        detail = "not started"
        while time.monotonic() < deadline:
            code = self.exited()
            if code is not None:
                raise RuntimeError(f"runtime {self.id} exited with code {code} while loading (see its log above)")
            ready, detail = self.status()
            if ready:
                return
            if detail.startswith("every version failed"):
                raise RuntimeError(f"runtime {self.id}: {detail}")
            time.sleep(0.1)
        raise TimeoutError(f"runtime {self.id} not AVAILABLE within SAGEMAKER_TFS_WAIT_TIME_SECONDS ({detail})")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
