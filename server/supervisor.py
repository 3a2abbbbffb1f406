"""`serve`: start everything in order, keep it running, drain it on SIGTERM.

Order: runtimes (and wait until every model is AVAILABLE and warm), then gunicorn (and wait
until its /ping says 200), then nginx. Afterwards any child that dies is restarted; while a
runtime restarts, the routing table marks it down so requests go to the surviving instances.
With async inference configured, the async dispatcher starts after gunicorn.
SIGTERM drains: nginx finishes in-flight requests (SIGQUIT), then the async dispatcher, then gunicorn, then the
runtimes.

Runtime processes come in groups of SAGEMAKER_TFS_INSTANCE_COUNT: one group per framework, serving all
its models (SAGESTACK_RUNTIME_SHARING=framework), or one per model (=model).
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import grpc

from server import control, endpoint_config, gunicorn_conf, nginx, variants
from server.control import Reply
from server.modeldir import MODEL_NAME, ModelDirError, ModelSpec, find_models, model_spec
from server.routes import DOWN, READY, STARTING, InstanceRoute, ModelRoute, RouteTable
from server.runtimes import missing_packages, process_group
from server.runtimes.process import ModelLoadFailed, RuntimeInstance
from server.settings import Settings

DRAIN_SECONDS = 25  # SageMaker sends SIGKILL 30 s after SIGTERM
RUNTIME_BASE_MB = 400  # measured RSS of one idle TF runtime process
GUNICORN_WORKER_CLASSES = {"gevent_h1c": "server.h1c_worker.GeventH1cWorker"}  # ours; other names are gunicorn's


class StartupError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[serve] {message}", file=sys.stderr, flush=True)


class PortSlots:
    """SAGEMAKER_SAFE_PORT_RANGE: instance slot i gets gRPC lo+2i and REST lo+2i+1."""

    def __init__(self, port_range: tuple[int, int]) -> None:
        self.lo, self.hi = port_range
        self.capacity = (self.hi - self.lo + 1) // 2
        self.used: set[int] = set()

    def take_many(self, n: int) -> list[tuple[int, int]]:
        free = [i for i in range(self.capacity) if i not in self.used][:n]
        if len(free) < n:
            raise StartupError(
                f"SAGEMAKER_SAFE_PORT_RANGE {self.lo}-{self.hi} has room for {self.capacity} model-server "
                f"instances; {len(self.used) + n} are needed"
            )
        self.used.update(free)
        return [(self.lo + 2 * i, self.lo + 2 * i + 1) for i in free]

    def give_back(self, grpc_port: int) -> None:
        self.used.discard((grpc_port - self.lo) // 2)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.RLock()
        self.routes_changed = threading.Condition(self.lock)
        self.table = RouteTable(multi_model=settings.multi_model)
        self.runtimes: dict[str, list[RuntimeInstance]] = {}  # process group -> its instances
        self.loading: set[str] = set()
        self.slots = PortSlots(settings.safe_port_range)
        self.gunicorn: subprocess.Popen | None = None
        self.nginx: subprocess.Popen | None = None
        self.dispatcher: subprocess.Popen | None = None  # async inference (server.async_dispatcher), when configured
        self.dispatcher_started = 0.0  # a dispatcher that dies at once is restarted at most once a second
        self.control: control.ControlServer | None = None
        self.stopping = threading.Event()
        self.restarting: set[str] = set()
        self.endpoint_config: endpoint_config.EndpointConfig | None = None
        self.weights: variants.Weights = {}  # set by `sagestack variants set-weights`

    # ---- start-up ----------------------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        try:
            self.start()
        except (
            StartupError,
            ModelDirError,
            ValueError,
            FileNotFoundError,
            TimeoutError,
            RuntimeError,
        ) as exc:
            log(f"start-up failed: {exc}")
            self.shutdown()
            return 1
        s = self.settings
        log(f"ready: http://{s.bind_address}:{s.bind_port} serving {sorted(self.table.models)}")
        while not self.stopping.wait(0.25):
            self.watch()
        self.shutdown()
        log("stopped")
        return 0

    def start(self) -> None:
        s = self.settings
        self._prepare_run_dir()
        if s.multi_model and s.endpoint_config is not None:
            raise StartupError("SAGESTACK_ENDPOINT_CONFIG names its variants' models: not with SAGEMAKER_MULTI_MODEL")
        if not s.multi_model:
            specs = find_models(s.model_dir, s.default_model_name)
            names = [spec.name for spec in specs]
            if s.default_model_name and s.default_model_name not in names:
                raise StartupError(f"SAGEMAKER_TFS_DEFAULT_MODEL_NAME={s.default_model_name!r} is not among {names}")
            self.table.default_model = s.default_model_name or names[0]
            if s.endpoint_config is not None:
                try:
                    self.endpoint_config = endpoint_config.load(s.endpoint_config, names)
                except endpoint_config.EndpointConfigError as exc:
                    raise StartupError(str(exc)) from None
                self.table.default_model = self.endpoint_config.name  # a request naming no model is split
            for spec in specs:
                if self._startable(spec):
                    self._add_model(spec, start=False)
            with self.lock:
                for inst in self._instances():
                    inst.start()  # each process once, with all of its models
                waits = [(inst, m) for inst in self._instances() for m in inst.models]
            deadline = time.monotonic() + s.wait_time_seconds
            with ThreadPoolExecutor(max(1, len(waits))) as pool:
                futures = [(m, pool.submit(self._await_model, inst, m, deadline)) for inst, m in waits]
                for name, future in futures:
                    try:
                        future.result()
                    except (RuntimeError, TimeoutError) as exc:
                        if name in self.table.models:
                            self._model_failed(name, self.table.models[name].kind, str(exc))
            if not self.table.models:
                raise StartupError(f"no model could be served: {self.table.failed}")
            self._check_variants_served()
        self._write_routes()
        self.control = control.ControlServer(s.control_socket, self.load_model, self.unload_model, self.wait_routes,
                                             self.variant_weights, self.refresh_versions)  # fmt: skip
        self.control.start()
        self._start_gunicorn()
        self._wait_gunicorn(time.monotonic() + 60)
        self._start_dispatcher()
        self._start_nginx()

    def _prepare_run_dir(self) -> None:
        run = self.settings.run_dir
        run.mkdir(parents=True, exist_ok=True)
        for stale in ("routes.json", "gunicorn.sock", "control.sock", "nginx.pid"):
            (run / stale).unlink(missing_ok=True)
        shutil.rmtree(run / "prometheus", ignore_errors=True)
        (run / "prometheus").mkdir()
        self.settings.write(self.settings.settings_file)  # the children load these, not the environment

    def _startable(self, spec: ModelSpec) -> bool:
        """Whether the model's backend packages and its code/requirements.txt are in place (else it failed)."""
        why = backend_missing(spec.kind)
        if why:
            self._model_failed(spec.name, spec.kind, why)
            return False
        try:
            install_requirements(spec, self.settings.requirements_prefix)
        except StartupError as exc:
            self._model_failed(spec.name, spec.kind, str(exc))
            return False
        return True

    def _instances(self) -> list[RuntimeInstance]:
        with self.lock:
            return [inst for group in self.runtimes.values() for inst in group]

    def _model_failed(self, name: str, kind: str, why: str) -> None:
        """A model that cannot start fails start-up (SageMaker's policy), or with SAGESTACK_FAIL_ON_MODEL_ERROR=false
        is reported as unavailable in /ping's detail and /metrics while the others serve."""
        reason = f"backend {kind}: {why}"
        if self.settings.fail_on_model_error:
            raise StartupError(f"model '{name}' ({reason}); SAGESTACK_FAIL_ON_MODEL_ERROR=false serves the others")
        if name in self.table.failed:
            return
        log(f"model '{name}' is unavailable ({reason}); serving the others")
        self._remove_model(name)
        self.table.failed[name] = reason
        self._write_routes()

    def _add_model(self, spec: ModelSpec, start: bool) -> tuple[list[RuntimeInstance], bool]:
        """Put the model on its process group, made (and with `start`, started) if it is new: (instances, new)."""
        with self.lock:
            group = process_group(spec.name, spec.kind, self.settings.runtime_sharing)
            instances = self.runtimes.get(group)
            new = instances is None
            if instances is None:
                ports = self.slots.take_many(self.settings.instance_count)  # all or none, before any process
                instances = self.runtimes[group] = [
                    RuntimeInstance(group, i, p, self.settings) for i, p in enumerate(ports)
                ]
            for inst in instances:
                inst.models[spec.name] = (spec.kind, spec.base_path)
                if new and start:
                    inst.start()
            self.table.models[spec.name] = ModelRoute(
                spec.name,
                str(spec.base_path),
                spec.kind,
                list(spec.versions),
                str(spec.code_dir) if spec.code_dir else None,
                [InstanceRoute(x.id, x.grpc_port, x.rest_port, STARTING, x.pid) for x in instances],
            )
            where = f"{len(instances)} new instances" if new else f"joins the running instances of '{group}'"
            log(f"model '{spec.name}' ({spec.kind}, versions {list(spec.versions)}): {where}")
            return instances, new

    def _await_model(self, inst: RuntimeInstance, model: str, deadline: float) -> None:
        inst.wait_ready(model, deadline)
        self._set_state(inst, READY, [model])
        took = time.monotonic() - inst.started_at
        log(f"runtime {inst.id}: model '{model}' AVAILABLE {took:.1f}s after the process started (pid {inst.pid})")

    def _set_state(self, inst: RuntimeInstance, state: str, models: list[str] | None = None) -> None:
        """The route state of `inst` for `models` (default: every model it serves)."""
        with self.lock:
            for name in inst.models if models is None else models:
                model = self.table.models.get(name)
                for route in model.instances if model else ():
                    if route.id == inst.id:
                        route.state, route.pid = state, inst.pid
            self._write_routes()

    def _write_routes(self) -> None:
        with self.lock:
            self.table.endpoints = variants.endpoints(self.endpoint_config, self.table.models,
                                                      self.settings.compiled_model, self.weights)  # fmt: skip
            self.table.version += 1
            self.table.write(self.settings.routes_file)
            self.routes_changed.notify_all()

    def wait_routes(self, after: int, timeout: float) -> int:
        """Block until the routing table is newer than `after` (or `timeout` passes); its version then."""
        with self.routes_changed:
            self.routes_changed.wait_for(lambda: self.table.version > after, timeout)
            return self.table.version

    def _start_gunicorn(self) -> None:
        s = self.settings
        argv = [
            sys.executable, "-m", "gunicorn",
            "-c", gunicorn_conf.__file__,
            "--bind", f"unix:{s.gunicorn_socket}",
            "--workers", str(s.gunicorn_workers),
            "--threads", str(s.gunicorn_threads),
            "--worker-class", GUNICORN_WORKER_CLASSES.get(s.gunicorn_worker_class, s.gunicorn_worker_class),
            "--worker-connections", "2000",
            "--backlog", "2048",
            "--timeout", str(s.gunicorn_timeout),
            "--graceful-timeout", str(DRAIN_SECONDS - 5),
            "--keep-alive", "75",
            "--log-level", s.gunicorn_loglevel,
            "--no-control-socket",
            f"server.app:create_app({str(s.settings_file)!r})",
        ]  # fmt: skip
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(s.run_dir / "prometheus"),
        }
        self.gunicorn = subprocess.Popen(argv, env=env, start_new_session=True)

    def _wait_gunicorn(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.gunicorn is not None and self.gunicorn.poll() is not None:
                raise StartupError(f"gunicorn exited with code {self.gunicorn.returncode}")
            if ping_unix(self.settings.gunicorn_socket) == 200:
                return
            time.sleep(0.1)
        raise StartupError("gunicorn did not answer /ping with 200 within 60 s")

    def _start_dispatcher(self) -> None:
        if self.settings.async_enabled:
            argv = [sys.executable, "-m", "server.async_dispatcher", str(self.settings.settings_file)]
            self.dispatcher = subprocess.Popen(argv, start_new_session=True)
            self.dispatcher_started = time.monotonic()

    def _start_nginx(self) -> None:
        conf = nginx.write_config(self.settings)
        nginx.check(conf, self.settings.run_dir)
        self.nginx = subprocess.Popen(nginx.argv(conf, self.settings.run_dir), start_new_session=True)
        host = "127.0.0.1" if self.settings.bind_address in ("0.0.0.0", "::") else self.settings.bind_address
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.nginx.poll() is not None:
                code, port = self.nginx.returncode, self.settings.bind_port
                raise StartupError(f"nginx exited with code {code} (is port {port} free?)")
            try:
                socket.create_connection((host, self.settings.bind_port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise StartupError(f"nginx is not accepting on port {self.settings.bind_port}")

    # ---- keeping it running ------------------------------------------------------------------
    def watch(self) -> None:
        for inst in self._instances():
            code = inst.exited()
            if code is not None and inst.id not in self.restarting:
                self.restarting.add(inst.id)
                served = ", ".join(sorted(inst.models))
                log(f"runtime {inst.id} (pid {inst.pid}, serving {served}) exited with code {code}; restarting it")
                self._set_state(inst, DOWN)
                threading.Thread(target=self._restart, args=(inst,), daemon=True).start()
        if self.gunicorn is not None and self.gunicorn.poll() is not None:
            log(f"gunicorn exited with code {self.gunicorn.returncode}; restarting it")
            self._start_gunicorn()
        dispatcher_up_for = time.monotonic() - self.dispatcher_started
        if self.dispatcher is not None and self.dispatcher.poll() is not None and dispatcher_up_for > 1.0:
            log(f"the async dispatcher exited with code {self.dispatcher.returncode}; restarting it")
            self._start_dispatcher()
        if self.nginx is not None and self.nginx.poll() is not None:
            log(f"nginx exited with code {self.nginx.returncode}; restarting it")
            self._start_nginx()

    def _restart(self, inst: RuntimeInstance) -> None:
        try:
            time.sleep(min(0.1 * 2**inst.restarts, 5.0))
            inst.restarts += 1
            with self.lock:
                if self.stopping.is_set() or inst not in self.runtimes.get(inst.group, []):
                    return
                inst.start()
                self._set_state(inst, STARTING)
                models = list(inst.models)
            deadline = time.monotonic() + self.settings.wait_time_seconds
            for model in models:
                try:
                    self._await_model(inst, model, deadline)
                except (ModelLoadFailed, TimeoutError) as exc:
                    log(f"restart of {inst.id}: {exc}")
        except RuntimeError as exc:
            log(f"restart of {inst.id} failed: {exc}")
        finally:
            self.restarting.discard(inst.id)

    def _check_variants_served(self) -> None:
        """Every model of the endpoint config serves, or start-up fails: /ping must not be 200 while a weighted
        share of the requests would get 503s. The checked file goes to the run directory for the workers."""
        config = self.endpoint_config
        if config is None:
            return
        down = sorted({v.model for v in (*config.variants, *filter(None, [config.shadow]))} - set(self.table.models))
        if down:
            why = "; ".join(f"{name}: {self.table.failed.get(name, 'not served')}" for name in down)
            raise StartupError(f"SAGESTACK_ENDPOINT_CONFIG: the variants' models could not start ({why})")
        endpoint_config.write_checked(config, self.settings.run_dir)

    # ---- variants ------------------------------------------------------------------------------
    def variant_weights(self, change: dict | None) -> Reply:
        """The endpoints' variants; with `change` ({"endpoint": name or null, "weights": {variant: w}}), new
        weights first, as UpdateEndpointWeightsAndCapacities sets them (the default endpoint when none is named)."""
        with self.lock:
            if change is not None:
                if not isinstance(change, dict):
                    return 400, {"error": 'the body must be {"endpoint": name or null, "weights": {...}}'}
                name = change.get("endpoint") or self.table.default_model
                endpoint = self.table.endpoints.get(name or "")
                if endpoint is None:
                    return 404, {"error": f"no endpoint {name!r} with variants (have: {sorted(self.table.endpoints)})"}
                try:
                    if not isinstance(change.get("weights"), dict):
                        raise ValueError('the body must be {"endpoint": name or null, "weights": {variant: weight}}')
                    wanted = {str(k): float(v) for k, v in change["weights"].items()}
                    updated = variants.set_weights(endpoint, wanted)
                except (TypeError, ValueError) as exc:
                    return 400, {"error": str(exc)}
                self.weights.update({(endpoint.name, v.name): v.weight for v in updated})
                self._write_routes()
                log(f"endpoint '{endpoint.name}': weights {', '.join(f'{v.name}={v.weight:g}' for v in updated)}")
            return 200, {"endpoints": {name: asdict(e) for name, e in self.table.endpoints.items()},
                         "default": self.table.default_model}  # fmt: skip

    # ---- multi-model endpoint ----------------------------------------------------------------
    def load_model(self, name: str, url: str) -> Reply:
        try:
            source = mme_source(name, url, self.settings)
        except Refused as exc:
            return exc.status, {"error": str(exc)}
        with self.lock:
            if name in self.table.models or name in self.loading:
                return 409, {"error": f"model '{name}' is already loaded"}
            try:
                spec = model_spec(name, source)
            except ModelDirError as exc:
                return 404, {"error": str(exc)}
            why = backend_missing(spec.kind)
            if why:
                return 500, {"error": f"model '{name}' (backend {spec.kind}) {why}"}
            new = process_group(name, spec.kind, self.settings.runtime_sharing) not in self.runtimes
            short = memory_shortfall(spec, self.settings.instance_count, new)
            if short:
                return 507, {"error": f"not enough memory to load model '{name}': {short}"}
            if new and self.slots.capacity - len(self.slots.used) < self.settings.instance_count:
                return 507, {"error": f"no free ports left in SAGEMAKER_SAFE_PORT_RANGE for model '{name}'"}
            self.loading.add(name)
        try:
            if self.settings.allow_requirements:  # a model loaded at run time brings code we did not vet
                install_requirements(spec, self.settings.requirements_prefix)
            elif spec.code_dir is not None and (spec.code_dir / "requirements.txt").is_file():
                log(f"model '{name}': code/requirements.txt not installed (SAGESTACK_ALLOW_REQUIREMENTS is false)")
            instances, new = self._add_model(spec, start=True)
            self._write_routes()
            deadline = time.monotonic() + self.settings.wait_time_seconds
            for inst in instances:
                if not new:
                    inst.reload(max(deadline - time.monotonic(), 1.0))
                self._await_model(inst, name, deadline)
        except (RuntimeError, TimeoutError, StartupError, grpc.RpcError) as exc:
            self._remove_model(name)
            return 500, {"error": f"model '{name}' failed to load: {exc}"}
        finally:
            self.loading.discard(name)
        return 200, {"message": f"model '{name}' loaded", "versions": list(spec.versions)}

    def unload_model(self, name: str) -> Reply:
        with self.lock:
            if name not in self.table.models or name in self.loading:
                return 404, {"error": f"model '{name}' is not loaded"}
        self._remove_model(name)
        return 200, {"message": f"model '{name}' unloaded"}

    def refresh_versions(self, name: str) -> Reply:
        """Serve the version folders the model has now (one added or taken away), without a restart: routes stop
        naming a version before its processes drop it, and name a new one only once they serve it."""
        with self.lock:
            route = self.table.models.get(name)
            if route is None or name in self.loading:
                return 404, {"error": f"model '{name}' is not loaded"}
            instances = [inst for insts in self.runtimes.values() for inst in insts if name in inst.models]
        try:
            spec = model_spec(name, Path(route.base_path))
        except ModelDirError as exc:
            return 409, {"error": str(exc)}
        if spec.kind != route.kind:
            return 409, {"error": f"model '{name}' is served by {route.kind}; its new versions need {spec.kind}"}
        with self.lock:
            route.versions = [v for v in route.versions if v in spec.versions]
        self._write_routes()
        deadline = time.monotonic() + self.settings.wait_time_seconds
        failed: dict[int, str] = {}
        served = set(spec.versions)
        try:
            for inst in instances:
                inst.reload(max(deadline - time.monotonic(), 1.0))
                states = inst.version_states(name)
                failed |= {v: why for v, (ok, why) in states.items() if not ok and v in spec.versions}
                served &= {v for v, (ok, _) in states.items() if ok}
        except (grpc.RpcError, RuntimeError) as exc:
            return 500, {"error": f"model '{name}': reloading its versions failed: {exc}"}
        with self.lock:
            route.versions = sorted(served) or route.versions  # only what every instance serves is routed
        self._write_routes()
        log(f"model '{name}' now serves versions {route.versions}")
        if failed:
            why = "; ".join(f"version {v}: {e or 'not AVAILABLE'}" for v, e in sorted(failed.items()))
            return 500, {"error": f"model '{name}': {why}", "versions": route.versions}
        return 200, {"model": name, "versions": route.versions}

    def _remove_model(self, name: str) -> None:
        """Stop routing to the model, then unload it from its processes (stopping them if it was their last)."""
        with self.lock:
            self.table.models.pop(name, None)
            self._write_routes()  # gateways stop routing to it first
            group = next((g for g, insts in self.runtimes.items() if name in insts[0].models), None)
            instances = self.runtimes.get(group, []) if group else []
            for inst in instances:
                inst.models.pop(name, None)
            last = bool(instances) and not instances[0].models
            if last:
                del self.runtimes[group]
        for inst in instances:
            if last:
                inst.stop()
                self.slots.give_back(inst.grpc_port)
            elif inst.exited() is None:
                try:
                    inst.reload(self.settings.wait_time_seconds)
                except (grpc.RpcError, RuntimeError) as exc:  # a restart serves the list without it anyway
                    log(f"runtime {inst.id}: unloading '{name}' failed ({exc}); it goes with the next restart")

    # ---- shutdown ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        deadline = time.monotonic() + DRAIN_SECONDS
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)  # graceful: finish in-flight, accept nothing new
            _wait(self.nginx, deadline)
        if self.dispatcher is not None and self.dispatcher.poll() is None:
            self.dispatcher.send_signal(signal.SIGTERM)  # takes nothing new, finishes what runs (or is recovered)
            _wait(self.dispatcher, deadline)
        if self.gunicorn is not None and self.gunicorn.poll() is None:
            self.gunicorn.send_signal(signal.SIGTERM)
            _wait(self.gunicorn, deadline)
        if self.control is not None:
            self.control.stop()
        instances = self._instances()
        for inst in instances:
            inst.signal(signal.SIGTERM)
        for inst in instances:
            inst.stop(timeout=max(1.0, deadline + 3 - time.monotonic()))


def _wait(proc: subprocess.Popen, deadline: float) -> None:
    try:
        proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ping_unix(path: Path) -> int | None:
    """GET /ping over gunicorn's unix socket; the status, or None if nothing answers."""
    conn = http.client.HTTPConnection("localhost", timeout=2)
    try:
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.settimeout(2)
        conn.sock.connect(str(path))
        conn.request("GET", "/ping")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def backend_missing(kind: str) -> str | None:
    """Why the runtime for `kind` cannot start here (its Python packages are missing), or None."""
    missing = missing_packages(kind)
    return f"needs the Python package(s) {', '.join(missing)}, which are not installed here" if missing else None


class Refused(ValueError):
    """A POST /models the supervisor will not carry out, with the status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def mme_source(name: str, url: str, settings: Settings) -> Path:
    """The local directory POST /models may load `name` from: a valid name, a local path (or file:// URL) under
    the model root or SAGESTACK_MME_ALLOWED_PREFIXES; otherwise Refused (400, or 403 for a path outside)."""
    if not MODEL_NAME.fullmatch(name) or ".." in name:
        raise Refused(
            400, f"model_name {name!r} is not a valid model name (letters, digits, '.', '_', '-'; at most 128)"
        )
    if "\x00" in url or "://" in url.removeprefix("file://"):
        raise Refused(400, f"url {url!r} must be a local path (or file:// URL) to a model directory")
    path = Path(url.removeprefix("file://")).resolve()
    roots = (settings.model_dir, *settings.mme_allowed_prefixes)
    if not any(path.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise Refused(403, f"url {url!r} is outside the model root and SAGESTACK_MME_ALLOWED_PREFIXES ({allowed})")
    return path


def install_requirements(spec: ModelSpec, prefix: Path) -> None:
    """`code/requirements.txt` is installed before workers import the handlers (as SageMaker does).

    Into the environment when it is writable (root, a laptop venv); otherwise (a non-root image) into
    `prefix`, whose site-packages then goes on PYTHONPATH for every child started after it. pip skips
    what the environment already has, so the prefix holds only what the model adds.
    """
    if spec.code_dir is None or not (spec.code_dir / "requirements.txt").is_file():
        return
    req = spec.code_dir / "requirements.txt"
    argv = [sys.executable, "-m", "pip", "install", "--no-input", "-q", "-r", str(req)]
    if not os.access(sysconfig.get_path("purelib"), os.W_OK):
        argv += ["--prefix", str(prefix)]
        site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
        paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if site not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([site, *filter(None, paths)])
    log(f"model '{spec.name}': pip install -r {req}" + (f" --prefix {prefix}" if "--prefix" in argv else ""))
    result = subprocess.run(argv)
    if result.returncode != 0:
        raise StartupError(f"model '{spec.name}': installing {req} failed (pip exit {result.returncode})")


def memory_shortfall(spec: ModelSpec, instances: int, new_process: bool) -> str | None:
    """None if there is room for the model on its instances (new ones, or joining running ones); else what is
    missing (HTTP 507)."""
    size_mb = sum(f.stat().st_size for f in spec.base_path.rglob("*") if f.is_file()) / 2**20
    needed = instances * (RUNTIME_BASE_MB * new_process + 2 * size_mb)
    available = _mem_available_mb()
    if available is not None and available < needed:
        return f"needs ~{needed:.0f} MB, {available:.0f} MB available"
    return None


def _mem_available_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def serve(settings: Settings | None = None) -> int:
    return Supervisor(settings or Settings.from_env()).run()
