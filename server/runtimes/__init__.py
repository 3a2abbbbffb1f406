"""Runtime servers: one TF-Serving-compatible API in front of every backend, and the one table of backends.

`command(kinds, ...)` gives the argv that starts one runtime process for the model kinds it serves (its
model config file names each model's kind as its `model_platform`). Every runtime takes
tensorflow_model_server's flags, so the supervisor treats them all alike.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from server.settings import Settings


@dataclass(frozen=True)
class Runtime:
    """How a model kind (compiled/metadata.json's "runtime", or "tensorflow") is served.

    factory:  "module:function" taking RuntimeOptions and returning a Backend (server/runtimes/servable.py);
    packages: what it imports, checked before start-up so a missing one is named rather than a crash;
    compiler: for the kinds `sagestack compile` produces, the compiler backend module (build, Runner, CAPABILITIES);
    process:  the runtime process models of this kind share under SAGESTACK_RUNTIME_SHARING=framework. Kinds that
              import the same framework share one (TorchScript and the music transformer: torch); each native
              compiled runtime keeps its own, since each sizes its own thread pool to the process's CPUs.
    """

    factory: str
    packages: tuple[str, ...]
    process: str
    compiler: str | None = None


COMPILED = "compiler.compiled_runtime:make_backend"

# The one registry: a runtime, or a compiler backend, is its module plus one line here.
RUNTIMES = {
    "tensorflow": Runtime("server.runtimes.tfs_server:make_backend", ("tensorflow",), "tensorflow"),
    "torchscript": Runtime("compiler.torchscript_runtime:make_backend", ("torch",), "torch"),
    "tvm": Runtime(COMPILED, ("tvm",), "tvm", compiler="compiler.tvm_backend"),
    "onnxruntime": Runtime(COMPILED, ("onnxruntime",), "onnxruntime", compiler="compiler.onnx_backend"),
    "openvino": Runtime(COMPILED, ("openvino",), "openvino", compiler="compiler.openvino_backend"),
    "music_transformer": Runtime("models.music_transformer.runtime:make_backend", ("torch", "mido"), "torch"),
}


def process_group(model: str, kind: str, sharing: str) -> str:
    """The runtime process group a model joins: its framework's (shared), or its own under sharing=model."""
    if sharing == "model":
        return model
    if kind not in RUNTIMES:
        raise ValueError(f"no runtime for model kind '{kind}' (known: {sorted(RUNTIMES)})")
    return RUNTIMES[kind].process


def native_binary(kinds: Iterable[str]) -> str | None:
    """tensorflow_model_server, where installed, for a process that serves SavedModels only."""
    return shutil.which("tensorflow_model_server") if set(kinds) == {"tensorflow"} else None


def missing_packages(kind: str) -> list[str]:
    """The Python packages the runtime for `kind` imports that are not installed (found without importing them)."""
    if kind not in RUNTIMES or native_binary([kind]):
        return []
    runtime = RUNTIMES[kind]
    needed = [runtime.factory.split(".")[0], *runtime.packages]
    return [name for name in dict.fromkeys(needed) if importlib.util.find_spec(name) is None]


def command(kinds: Iterable[str], grpc_port: int, rest_port: int, config_file: Path, settings: Settings) -> list[str]:
    """The argv of one runtime process. Ours load the validated settings from the supervisor's settings file;
    the real tensorflow_model_server gets its batching parameters file, the only form it reads."""
    unknown = sorted(set(kinds) - set(RUNTIMES))
    if unknown:
        raise ValueError(f"no runtime for model kind(s) {unknown} (known: {sorted(RUNTIMES)})")
    native = native_binary(kinds)
    if native:
        argv = [native]
    else:
        module = "server.runtimes.model_server"
        argv = [sys.executable, "-m", module, f"--settings_file={settings.settings_file}"]
    argv += [
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        f"--model_config_file={config_file}",
        f"--tensorflow_intra_op_parallelism={settings.intra_op_parallelism}",
        f"--tensorflow_inter_op_parallelism={settings.inter_op_parallelism}",
    ]
    if settings.enable_batching:
        argv.append("--enable_batching=true")
        if native:
            batching = config_file.with_suffix(".batching")
            batching.write_text(tfs_batching_parameters(settings))
            argv.append(f"--batching_parameters_file={batching}")
    if settings.gpu_count:
        fraction = (1.0 - settings.gpu_mem_margin) / settings.instance_count
        argv.append(f"--per_process_gpu_memory_fraction={fraction:.4f}")
    return argv


def tfs_batching_parameters(settings: Settings) -> str:
    """TF Serving's batching_parameters_file (text proto) from SAGEMAKER_TFS_* batching settings."""
    return (
        f"max_batch_size {{ value: {settings.max_batch_size} }}\n"
        f"batch_timeout_micros {{ value: {settings.batch_timeout_micros} }}\n"
        f"num_batch_threads {{ value: {settings.num_batch_threads} }}\n"
        f"max_enqueued_batches {{ value: {settings.max_enqueued_batches} }}\n"
    )
