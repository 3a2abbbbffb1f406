"""The one reader of the environment.

Every SageMaker variable the TFS container honours is read here, with the same name and default,
plus the few sagestack adds (SAGESTACK_*). A bad value fails start-up with a message that names
the variable; nginx.conf, the gunicorn arguments and the runtime flags are all derived from this.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from server.handler_kit import MAX_IMAGE_PIXELS

# gunicorn -k names, plus gevent_h1c (server/h1c_worker.py: gevent with a lean C-parsed HTTP loop). gevent_pywsgi
# (gevent's own HTTP parser) was cheaper per request in single runs, not faster in the interleaved overhead bench.
BATCH_STRATEGIES = ("multi_record", "single_record")  # SAGEMAKER_BATCH_STRATEGY, as MULTI_RECORD or SINGLE_RECORD
WORKER_CLASSES = ("gevent", "gevent_h1c", "gevent_pywsgi", "sync", "gthread")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
NGINX_LOG_LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")
DEFAULT_PORT_RANGE = (9000, 9999)
# One runtime process per framework for all its models (as one tensorflow_model_server serves its model list),
# or one per model (isolation: a crash takes one model's instance down, not its framework's).
RUNTIME_SHARING = ("framework", "model")
_Num = TypeVar("_Num", int, float)


class SettingsError(ValueError):
    """A variable holds a value we cannot start with; the message names it."""


@dataclass(frozen=True)
class Settings:
    bind_port: int
    bind_address: str
    safe_port_range: tuple[int, int]
    grpc_port: int  # SAGESTACK_GRPC_PORT: OIP v2 over gRPC (server.v2_grpc) on the gateway workers; 0 is off
    instance_count: int
    inter_op_parallelism: int
    intra_op_parallelism: int
    gpu_mem_margin: float
    wait_time_seconds: int
    default_model_name: str | None
    enable_batching: bool
    max_batch_size: int
    batch_timeout_micros: int
    num_batch_threads: int
    max_enqueued_batches: int
    gunicorn_workers: int
    gunicorn_threads: int
    gunicorn_worker_class: str
    gunicorn_timeout: int
    gunicorn_loglevel: str
    nginx_proxy_read_timeout: int
    nginx_loglevel: str
    nginx_workers: str
    omp_num_threads: int
    multi_model: bool
    max_payload_mb: float
    model_dir: Path
    run_dir: Path
    compiled_model: bool
    gateway_batch_size: int
    fail_on_model_error: bool
    model_url: str | None
    tuning_dir: Path | None
    restart_wait_seconds: float
    access_log: bool
    console: bool  # SAGESTACK_CONSOLE: the web console at /console (nginx serves server/console/)
    projects_dir: Path | None  # SAGESTACK_PROJECTS_DIR: anomaly projects (/projects, models.anomaly.projects_api)
    max_image_pixels: int
    mme_allowed_prefixes: tuple[Path, ...]
    allow_requirements: bool
    auth_token: str | None
    runtime_sharing: str
    batch: bool
    batch_strategy: str
    max_concurrent_transforms: int
    # AsyncInferenceConfig: OutputConfig.S3OutputPath / S3FailurePath, ClientConfig.MaxConcurrentInvocationsPerInstance.
    async_output_path: str | None
    async_failure_path: str | None
    async_max_concurrent_invocations: int
    async_queue_path: Path | None
    async_input_prefixes: tuple[Path, ...]
    # SAGESTACK_ENDPOINT_CONFIG (server.endpoint_config): variants, shadow, data capture, explanations.
    endpoint_config: Path | None
    variant_seed: int | None  # SAGESTACK_VARIANT_SEED: the weighted split's random seed (per gateway worker)
    shadow_queue_size: int  # copies waiting for the shadow variant, per gateway worker; more are dropped
    shadow_workers: int  # copies run at once, per gateway worker

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * 1024 * 1024)

    @property
    def effective_proxy_read_timeout(self) -> int:
        """nginx must never give up before gunicorn does (as the SageMaker container does)."""
        return max(self.nginx_proxy_read_timeout, self.gunicorn_timeout)

    @property
    def gpu_count(self) -> int:
        """GPUs this container can see (the fractional-memory split only applies with one)."""
        return len(list(Path("/dev").glob("nvidia[0-9]*")))

    @property
    def routes_file(self) -> Path:
        return self.run_dir / "routes.json"

    @property
    def settings_file(self) -> Path:
        """The validated settings, written by the supervisor for its children (workers, runtimes) to load."""
        return self.run_dir / "settings.json"

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.touch(mode=0o600)  # it may hold SAGESTACK_AUTH_TOKEN: the stack's own user only
        tmp.chmod(0o600)
        tmp.write_text(json.dumps(asdict(self), indent=1, default=str))
        tmp.replace(path)  # readers never see half a file
        return path

    @classmethod
    def load(cls, path: str | Path) -> Settings:
        """Settings as `write` left them: the children take the supervisor's values and never re-read the env."""
        data = json.loads(Path(path).read_text())
        hints = typing.get_type_hints(cls)
        for name, hint in hints.items():
            if data[name] is None:
                continue
            if hint in (Path, Path | None):
                data[name] = Path(data[name])
            elif typing.get_origin(hint) is tuple:
                kind = Path if typing.get_args(hint)[0] is Path else (lambda v: v)
                data[name] = tuple(kind(v) for v in data[name])
        return cls(**data)

    @property
    def async_enabled(self) -> bool:
        """An endpoint takes InvokeEndpointAsync when it has somewhere to put the answers."""
        return self.async_output_path is not None

    @property
    def async_queue_file(self) -> Path:
        """The durable queue: SAGESTACK_ASYNC_QUEUE_PATH, else under the run directory."""
        return self.async_queue_path or self.run_dir / "async" / "queue.sqlite3"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "control.sock"

    @property
    def requirements_prefix(self) -> Path:
        """Where a model's code/requirements.txt goes when the environment is not writable (a non-root image)."""
        return self.run_dir / "python"

    @property
    def gunicorn_socket(self) -> Path:
        return self.run_dir / "gunicorn.sock"

    def as_env(self) -> dict[str, str]:
        """The settings as plain strings, for `sagestack config`."""
        out = {}
        for key, value in asdict(self).items():
            out[key] = "" if value is None else _env_text(value)
        if self.auth_token:
            out["auth_token"] = "(set)"  # never printed
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        return cls._read(_Env(os.environ if env is None else env))

    @classmethod
    def _read(cls, e: _Env) -> Settings:
        cpus = os.cpu_count() or 1
        gunicorn_timeout = e.integer("SAGEMAKER_GUNICORN_TIMEOUT_SECONDS", 30, lo=1)
        endpoint_config = e.optional_path("SAGESTACK_ENDPOINT_CONFIG")
        async_config = _endpoint_async(endpoint_config)
        bind_port = e.integer("SAGEMAKER_BIND_TO_PORT", 8080, lo=1, hi=65535)
        safe_port_range = e.port_range("SAGEMAKER_SAFE_PORT_RANGE")
        return cls(
            bind_port=bind_port,
            bind_address=e.text("SAGESTACK_BIND_ADDRESS", "0.0.0.0"),
            safe_port_range=safe_port_range,
            grpc_port=_grpc_port(e.integer("SAGESTACK_GRPC_PORT", 0, lo=0, hi=65535), bind_port, safe_port_range),
            instance_count=e.integer("SAGEMAKER_TFS_INSTANCE_COUNT", 1, lo=1, hi=64),
            inter_op_parallelism=e.integer("SAGEMAKER_TFS_INTER_OP_PARALLELISM", 0, lo=0),
            intra_op_parallelism=e.integer("SAGEMAKER_TFS_INTRA_OP_PARALLELISM", 0, lo=0),
            gpu_mem_margin=e.number("SAGEMAKER_TFS_FRACTIONAL_GPU_MEM_MARGIN", 0.2, lo=0.0, hi=1.0),
            wait_time_seconds=e.integer("SAGEMAKER_TFS_WAIT_TIME_SECONDS", 300, lo=1),
            default_model_name=e.text("SAGEMAKER_TFS_DEFAULT_MODEL_NAME", None),
            enable_batching=e.boolean("SAGEMAKER_TFS_ENABLE_BATCHING", False),
            max_batch_size=e.integer("SAGEMAKER_TFS_MAX_BATCH_SIZE", 8, lo=1),
            batch_timeout_micros=e.integer("SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS", 1000, lo=0),
            num_batch_threads=e.integer("SAGEMAKER_TFS_NUM_BATCH_THREADS", cpus, lo=1),
            max_enqueued_batches=e.integer("SAGEMAKER_TFS_MAX_ENQUEUED_BATCHES", cpus, lo=1),
            gunicorn_workers=e.integer("SAGEMAKER_GUNICORN_WORKERS", 1, lo=1, hi=256),
            gunicorn_threads=e.integer("SAGEMAKER_GUNICORN_THREADS", 1, lo=1, hi=1024),
            gunicorn_worker_class=e.choice("SAGEMAKER_GUNICORN_WORKER_CLASS", "gevent", WORKER_CLASSES),
            gunicorn_timeout=gunicorn_timeout,
            gunicorn_loglevel=e.choice("SAGEMAKER_GUNICORN_LOGLEVEL", "info", LOG_LEVELS),
            nginx_proxy_read_timeout=e.integer("SAGEMAKER_NGINX_PROXY_READ_TIMEOUT_SECONDS", 60, lo=1),
            nginx_loglevel=e.choice("SAGEMAKER_TFS_NGINX_LOGLEVEL", "error", NGINX_LOG_LEVELS),
            nginx_workers=e.nginx_workers("SAGESTACK_NGINX_WORKERS"),
            omp_num_threads=e.integer("OMP_NUM_THREADS", 1, lo=1),
            multi_model=e.boolean("SAGEMAKER_MULTI_MODEL", False),
            max_payload_mb=e.number("SAGEMAKER_MAX_PAYLOAD_IN_MB", 6.0, lo=0.001, hi=4096.0),
            model_dir=e.path("SAGESTACK_MODEL_DIR", _default_model_dir()),
            run_dir=e.path("SAGESTACK_RUN_DIR", Path("/tmp/sagestack")),
            compiled_model=e.boolean("COMPILEDMODEL", True),
            gateway_batch_size=e.integer("SAGESTACK_GATEWAY_BATCH_SIZE", 32, lo=1, hi=4096),
            fail_on_model_error=e.boolean("SAGESTACK_FAIL_ON_MODEL_ERROR", True),
            model_url=e.text("SAGESTACK_MODEL_URL", None),
            tuning_dir=e.optional_path("SAGESTACK_TUNING_DIR"),
            mme_allowed_prefixes=e.path_list("SAGESTACK_MME_ALLOWED_PREFIXES"),
            auth_token=e.text("SAGESTACK_AUTH_TOKEN", None),
            allow_requirements=e.boolean("SAGESTACK_ALLOW_REQUIREMENTS", False),
            max_image_pixels=e.integer("SAGESTACK_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS, lo=1),
            access_log=e.choice("SAGESTACK_ACCESS_LOG", "on", ("on", "off")) == "on",
            console=e.boolean("SAGESTACK_CONSOLE", False),
            projects_dir=e.optional_path("SAGESTACK_PROJECTS_DIR"),
            runtime_sharing=e.choice("SAGESTACK_RUNTIME_SHARING", "framework", RUNTIME_SHARING),
            # What a batch transform job sets in its container; GET /execution-parameters reports them.
            batch=e.boolean("SAGEMAKER_BATCH", False),
            batch_strategy=e.choice("SAGEMAKER_BATCH_STRATEGY", "multi_record", BATCH_STRATEGIES),
            max_concurrent_transforms=e.integer("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", cpus, lo=1, hi=1024),
            async_output_path=e.location("SAGESTACK_ASYNC_OUTPUT_PATH") or async_config.get("output"),
            async_failure_path=e.location("SAGESTACK_ASYNC_FAILURE_PATH") or async_config.get("failure"),
            async_max_concurrent_invocations=e.integer(
                "SAGESTACK_ASYNC_MAX_CONCURRENT_INVOCATIONS", async_config.get("concurrent") or 4, lo=1, hi=1000
            ),
            async_queue_path=e.optional_path("SAGESTACK_ASYNC_QUEUE_PATH"),
            async_input_prefixes=e.path_list("SAGESTACK_ASYNC_INPUT_PREFIXES"),
            endpoint_config=endpoint_config,
            variant_seed=e.optional_integer("SAGESTACK_VARIANT_SEED"),
            shadow_queue_size=e.integer("SAGESTACK_SHADOW_QUEUE_SIZE", 16, lo=1, hi=100_000),
            shadow_workers=e.integer("SAGESTACK_SHADOW_WORKERS", 2, lo=1, hi=256),
            restart_wait_seconds=e.number("SAGESTACK_RESTART_WAIT_SECONDS", float(gunicorn_timeout), lo=0.0, hi=3600.0),
        )


def _grpc_port(port: int, bind_port: int, safe: tuple[int, int]) -> int:
    """The gRPC port must not be the HTTP port or one the runtimes take from SAGEMAKER_SAFE_PORT_RANGE."""
    if port and port == bind_port:
        raise SettingsError(f"SAGESTACK_GRPC_PORT={port} is SAGEMAKER_BIND_TO_PORT as well; give gRPC its own port")
    if port and safe[0] <= port <= safe[1]:
        raise SettingsError(f"SAGESTACK_GRPC_PORT={port} is inside SAGEMAKER_SAFE_PORT_RANGE={safe[0]}-{safe[1]}, "
                            "which the runtimes use")  # fmt: skip
    return port


def _endpoint_async(path: Path | None) -> dict[str, Any]:
    """The endpoint config's AsyncInferenceConfig, as defaults for the SAGESTACK_ASYNC_* settings (which win)."""
    if path is None:
        return {}
    from server.endpoint_config import EndpointConfigError, load

    try:
        config = load(path)
    except EndpointConfigError as exc:
        raise SettingsError(str(exc)) from None
    for uri in filter(None, (config.async_output, config.async_failure)):
        if not uri.startswith(("s3://", "file:///")):
            raise SettingsError(f"SAGESTACK_ENDPOINT_CONFIG={path}: AsyncInferenceConfig.OutputConfig: {uri!r} must "
                                "be an s3://bucket/prefix or file:///path URI")  # fmt: skip
    return {"output": config.async_output, "failure": config.async_failure, "concurrent": config.async_max_concurrent}


class EnvFileError(ValueError):
    """An env file line is not KEY=VALUE; the message names the file and line."""


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and # comments skipped), as `sagestack tune` writes and `--env-file` takes."""
    env = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise EnvFileError(f"{path}:{n}: expected KEY=VALUE, got {line!r}")
        key, value = line.split("=", 1)
        env[key.strip()] = value.strip()
    return env


def write_env_file(path: Path, env: Mapping[str, object], note: str) -> Path:
    """The reverse of read_env_file: a `# note` line, then KEY=VALUE lines in name order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([f"# {note}", *(f"{k}={v}" for k, v in sorted(env.items()))]) + "\n")
    return path


def _default_model_dir() -> Path:
    opt = Path("/opt/ml/model")
    return opt if opt.is_dir() else Path("build/model").resolve()


def env_values(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every variable the settings read, with the value it resolved to in `env` (default: the environment).

    With an empty mapping these are SageMaker's defaults (and ours): the tuner's baseline and
    k8s/base/serving.env come from here, so no one restates them. Values that depend on the machine
    (CPU count, model directory) are as this machine has them.
    """
    e = _Env(os.environ if env is None else env)
    Settings._read(e)
    return {name: _env_text(value) for name, value in e.seen.items() if value is not None}


def env_defaults() -> dict[str, str]:
    return env_values({})


def _env_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):  # a port range joins with '-', a path list with ':'
        return (":" if any(isinstance(v, Path) for v in value) else "-").join(str(v) for v in value)
    return str(value)


def _recorded(method):
    """Record what an _Env accessor returned under the variable's name (for env_defaults)."""

    def read(self: _Env, name: str, *args, **kwargs):
        value = method(self, name, *args, **kwargs)
        self.seen[name] = value
        return value

    return read


class _Env:
    """Typed, validated access to one environment mapping; `seen` keeps what each variable resolved to."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.seen: dict[str, object] = {}

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    @_recorded
    def text(self, name: str, default: str | None) -> str | None:
        value = self._raw(name)
        return default if value is None else value

    @_recorded
    def integer(self, name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not an integer") from None
        return _bounded(name, value, lo, hi)

    @_recorded
    def optional_integer(self, name: str) -> int | None:
        raw = self._raw(name)
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not an integer") from None

    @_recorded
    def number(self, name: str, default: float, lo: float | None = None, hi: float | None = None) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number") from None
        return _bounded(name, value, lo, hi)

    @_recorded
    def boolean(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise SettingsError(f"{name}={raw!r} must be 'true' or 'false'")

    @_recorded
    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() not in choices:
            raise SettingsError(f"{name}={raw!r} must be one of {', '.join(choices)}")
        return raw.lower()

    @_recorded
    def path(self, name: str, default: Path) -> Path:
        raw = self._raw(name)
        return (Path(raw) if raw else default).resolve()

    @_recorded
    def optional_path(self, name: str) -> Path | None:
        raw = self._raw(name)
        return Path(raw).resolve() if raw else None

    @_recorded
    def path_list(self, name: str) -> tuple[Path, ...]:
        """Colon- or comma-separated absolute paths."""
        raw = self._raw(name)
        paths = [p for p in (raw or "").replace(",", ":").split(":") if p.strip()]
        relative = [p for p in paths if not p.strip().startswith("/")]
        if relative:
            raise SettingsError(f"{name} must list absolute paths, got {', '.join(relative)}")
        return tuple(Path(p.strip()).resolve() for p in paths)

    @_recorded
    def location(self, name: str) -> str | None:
        """An s3://bucket/prefix or file:///path URI (server.storage), as SageMaker's S3 paths are given."""
        raw = self._raw(name)
        if raw is None:
            return None
        from server.storage import Location, StorageError

        try:
            where = Location.parse(raw)
        except StorageError as exc:
            raise SettingsError(f"{name}: {exc}") from None
        if not raw.startswith(("s3://", "file://")):
            raise SettingsError(f"{name}={raw!r} must be an s3://bucket/prefix or file:///path URI")
        if not where.is_s3 and not where.path.startswith("/"):
            raise SettingsError(f"{name}={raw!r}: a file:// URI needs an absolute path (file:///path)")
        return raw

    @_recorded
    def port_range(self, name: str) -> tuple[int, int]:
        raw = self._raw(name)
        if raw is None:
            return DEFAULT_PORT_RANGE
        parts = raw.replace(":", "-").split("-")
        try:
            lo, hi = (int(p) for p in parts)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} must look like LOW-HIGH, e.g. 10000-10999") from None
        if not 1024 <= lo < hi <= 65535:
            raise SettingsError(f"{name}={raw!r} must satisfy 1024 <= LOW < HIGH <= 65535")
        return lo, hi

    @_recorded
    def nginx_workers(self, name: str) -> str:
        raw = self._raw(name)
        if raw is None or raw == "auto":
            return "auto"
        return str(self.integer(name, 1, lo=1, hi=64))


def _bounded(name: str, value: _Num, lo: _Num | None, hi: _Num | None) -> _Num:
    if lo is not None and value < lo:
        raise SettingsError(f"{name}={value} must be >= {lo}")
    if hi is not None and value > hi:
        raise SettingsError(f"{name}={value} must be <= {hi}")
    return value
