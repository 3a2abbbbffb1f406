"""One runtime process as the supervisor sees it: the models it serves, start, readiness, reload, stop.

A process serves one model (SAGESTACK_RUNTIME_SHARING=model) or every model of its framework (=framework, as one
tensorflow_model_server serves its whole model_config_list). Models join and leave a running process through TF
Serving's own ModelService.HandleReloadConfigRequest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import grpc
from google.protobuf import text_format

from server.protos import get_model_status_pb2, model_management_pb2, model_server_config_pb2, model_service_pb2_grpc
from server.runtimes import command
from server.settings import Settings

AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.State.END


class ModelLoadFailed(RuntimeError):
    """Every version of one model failed to load; the process and its other models are fine."""


def model_config(models: Mapping[str, tuple[str, Path]]) -> model_server_config_pb2.ModelServerConfig:
    """TF Serving's model config for name -> (kind, base_path): every version of each, the kind as its platform."""
    config = model_server_config_pb2.ModelServerConfig()
    for name, (kind, base_path) in sorted(models.items()):
        entry = config.model_config_list.config.add(name=name, base_path=str(base_path), model_platform=kind)
        entry.model_version_policy.all.SetInParent()
    return config


class RuntimeInstance:
    def __init__(self, group: str, index: int, ports: tuple[int, int], settings: Settings) -> None:
        self.group = group
        self.id = f"{group}-{index}"
        self.grpc_port, self.rest_port = ports
        self.settings = settings
        self.models: dict[str, tuple[str, Path]] = {}  # name -> (kind, base_path); the supervisor edits it
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.started_at = 0.0
        self._reload_lock = threading.Lock()

    def start(self) -> None:
        config = self.settings.run_dir / "runtimes" / f"{self.id}.config"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(text_format.MessageToString(model_config(self.models)))
        kinds = {kind for kind, _ in self.models.values()}
        argv = command(kinds, self.grpc_port, self.rest_port, config, self.settings)
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

    def _channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")

    def status(self, model: str) -> tuple[bool, str]:
        """(ready, detail): ready once every version is AVAILABLE (or failed, with one AVAILABLE)."""
        try:
            versions = self._version_status(model, timeout=2)
        except grpc.RpcError as exc:
            return False, f"not answering yet ({exc.code().name})"
        states = [s.state for s in versions]
        settled = all(s in (AVAILABLE, END) for s in states)
        errors = [s.status.error_message for s in versions if s.status.error_message]
        if settled and AVAILABLE not in states:
            return False, "every version failed to load: " + ("; ".join(errors) or "no version directory")
        return settled and AVAILABLE in states, f"states {states}"

    def version_states(self, model: str) -> dict[int, tuple[bool, str]]:
        """version -> (AVAILABLE, its error if it failed), as the process reports them now."""
        return {s.version: (s.state == AVAILABLE, s.status.error_message) for s in self._version_status(model, 5)}

    def _version_status(self, model: str, timeout: float) -> list:
        """TF Serving's GetModelStatus for `model`: one ModelVersionStatus per version."""
        with self._channel() as channel:
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = model
            response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=timeout)
        return list(response.model_version_status)

    def wait_ready(self, model: str, deadline: float) -> None:
        """Until `model` is AVAILABLE here; ModelLoadFailed if it cannot load, RuntimeError if the process exits."""
        detail = "not started"
        while time.monotonic() < deadline:
            code = self.exited()
            if code is not None:
                raise RuntimeError(f"runtime {self.id} exited with code {code} while loading (see its log above)")
            ready, detail = self.status(model)
            if ready:
                return
            if detail.startswith("every version failed"):
                raise ModelLoadFailed(f"runtime {self.id}: model '{model}': {detail}")
            time.sleep(0.1)
        raise TimeoutError(
            f"runtime {self.id}: model '{model}' not AVAILABLE within SAGEMAKER_TFS_WAIT_TIME_SECONDS ({detail})"
        )

    def reload(self, timeout: float) -> None:
        """Send the process its current model list (new models load, removed ones unload), as TF Serving takes it.

        One reload at a time, each with the list as it is when it is sent: the last one sent is the latest list.
        """
        with self._reload_lock:
            request = model_management_pb2.ReloadConfigRequest(config=model_config(self.models))
            with self._channel() as channel:
                stub = model_service_pb2_grpc.ModelServiceStub(channel)  # waits out a process still starting
                response = stub.HandleReloadConfigRequest(request, timeout=timeout, wait_for_ready=True)
        if response.status.error_code:
            raise RuntimeError(f"runtime {self.id} refused the model list: {response.status.error_message}")

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
