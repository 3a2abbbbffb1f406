"""Runtime servers: one TF-Serving-compatible API in front of every backend, and the one table of backends.

`command(kind, ...)` gives the argv that starts one runtime instance for a model kind. Every
runtime takes tensorflow_model_server's flags, so the supervisor treats them all alike.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from server.settings import Settings


@dataclass(frozen=True)
class Runtime:
    """How a model kind (compiled/metadata.json's "runtime", or "tensorflow") is served.

    factory:  "module:function" taking RuntimeOptions and returning a Backend (server/runtimes/servable.py);
    packages: what it imports, checked before start-up so a missing one is named rather than a crash;
    compiler: for the kinds `sagestack compile` produces, the compiler backend module (build, Runner, CAPABILITIES).
    """

    factory: str
    packages: tuple[str, ...]
    compiler: str | None = None


COMPILED = "compiler.compiled_runtime:make_backend"

# The one registry: a runtime, or a compiler backend, is its module plus one line here.
RUNTIMES = {
    "tensorflow": Runtime("server.runtimes.tfs_server:make_backend", ("tensorflow",)),
    "torchscript": Runtime("compiler.torchscript_runtime:make_backend", ("torch",)),
    "tvm": Runtime(COMPILED, ("tvm",), compiler="compiler.tvm_backend"),
    "onnxruntime": Runtime(COMPILED, ("onnxruntime",), compiler="compiler.onnx_backend"),
    "openvino": Runtime(COMPILED, ("openvino",), compiler="compiler.openvino_backend"),
    "music_transformer": Runtime("models.music_transformer.runtime:make_backend", ("torch", "mido")),
}


def native_binary(kind: str) -> str | None:
    return shutil.which("tensorflow_model_server") if kind == "tensorflow" else None


def missing_packages(kind: str) -> list[str]:
    """The Python packages the runtime for `kind` imports that are not installed (found without importing them)."""
    if kind not in RUNTIMES or native_binary(kind):
        return []
    runtime = RUNTIMES[kind]
    needed = [runtime.factory.split(".")[0], *runtime.packages]
    return [name for name in dict.fromkeys(needed) if importlib.util.find_spec(name) is None]


def command(kind: str, grpc_port: int, rest_port: int, config_file: Path, settings: Settings) -> list[str]:
    """The argv of one runtime instance. Ours load the validated settings from the supervisor's settings file;
    the real tensorflow_model_server gets its batching parameters file, the only form it reads."""
    if kind not in RUNTIMES:
        raise ValueError(f"no runtime for model kind '{kind}' (known: {sorted(RUNTIMES)})")
    native = native_binary(kind)
    if native:
        argv = [native]
    else:
        module = "server.runtimes.model_server"
        argv = [sys.executable, "-m", module, f"--runtime={kind}", f"--settings_file={settings.settings_file}"]
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


def model_config(name: str, base_path: Path) -> str:
    """A TF Serving model config file serving every version under base_path."""
    return (
        "model_config_list {\n  config {\n"
        f'    name: "{name}"\n    base_path: "{base_path}"\n    model_platform: "tensorflow"\n'
        "    model_version_policy { all {} }\n  }\n}\n"
    )
