"""Runtime servers: one TF-Serving-compatible API in front of every backend.

`command(kind, ...)` gives the argv that starts one runtime instance for a model kind. Every
runtime takes tensorflow_model_server's flags, so the supervisor treats them all alike.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from server.settings import Settings

# kind -> (python module implementing it with `main()`, the packages its backend imports), used when no
# native binary applies. The packages are what a runtime needs installed; `missing_packages` checks them.
PYTHON_RUNTIMES = {
    "tensorflow": ("server.runtimes.tfs_server", ("tensorflow",)),
    "torchscript": ("server.runtimes.torchscript_server", ("compiler", "torch")),
    "onnxruntime": ("server.runtimes.compiled_server", ("compiler", "onnxruntime")),
    "tvm": ("server.runtimes.compiled_server", ("compiler", "tvm")),
    "openvino": ("server.runtimes.compiled_server", ("compiler", "openvino")),
    "music_transformer": ("server.runtimes.music_server", ("models", "torch", "mido")),
}


def native_binary(kind: str) -> str | None:
    return shutil.which("tensorflow_model_server") if kind == "tensorflow" else None


def missing_packages(kind: str) -> list[str]:
    """The Python packages the runtime for `kind` imports that are not installed (found without importing them)."""
    if kind not in PYTHON_RUNTIMES or native_binary(kind):
        return []
    module, packages = PYTHON_RUNTIMES[kind]
    needed = [module.split(".")[0], *packages]
    return [name for name in needed if importlib.util.find_spec(name) is None]


def command(kind: str, grpc_port: int, rest_port: int, config_file: Path, settings: Settings) -> list[str]:
    if kind not in PYTHON_RUNTIMES:
        raise ValueError(f"no runtime for model kind '{kind}' (known: {sorted(PYTHON_RUNTIMES)})")
    native = native_binary(kind)
    argv = [native] if native else [sys.executable, "-m", PYTHON_RUNTIMES[kind][0]]
    argv += [
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        f"--model_config_file={config_file}",
        f"--tensorflow_intra_op_parallelism={settings.intra_op_parallelism}",
        f"--tensorflow_inter_op_parallelism={settings.inter_op_parallelism}",
    ]
    if settings.enable_batching:
        batching = config_file.with_suffix(".batching")
        batching.write_text(
            f"max_batch_size {{ value: {settings.max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {settings.batch_timeout_micros} }}\n"
            f"num_batch_threads {{ value: {settings.num_batch_threads} }}\n"
            f"max_enqueued_batches {{ value: {settings.max_enqueued_batches} }}\n"
        )
        argv += ["--enable_batching=true", f"--batching_parameters_file={batching}"]
    if settings.gpu_count:
        fraction = (1.0 - settings.gpu_mem_margin) / settings.instance_count
        argv.append(f"--per_process_gpu_memory_fraction={fraction:.4f}")
    return argv


def model_config(name: str, base_path: Path) -> str:
    """A TF Serving model config file serving every version under base_path."""
    return (
        "model_config_list {\n  config {\n"
        f'    name: "{name}"\n    base_path: "{base_path}"\n    model_platform: "tensorflow"\n'
        "    model_version_policy { all {} }\n  }\n}\n"
    )
