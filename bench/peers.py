"""Peer model servers (KServe, MLServer) in their own cached venvs, and `sagestack bench peers`.

KServe pins protobuf<7, so each peer gets its own virtual environment, made once under
build/venvs/. Every server, ours included, serves the same half_plus_three SavedModel; wrk drives
each with the same connections, interleaved round by round. `--protocol sagemaker` sends each its
native request (ours /invocations, KServe v1, MLServer v2); `--protocol v2` sends every server the
same OIP v2 request to /v2/models/half_plus_three/infer.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench import loadgen
from server.settings import read_env_file

VENVS = Path("build/venvs")
SERVERS = Path(__file__).with_name("peer_servers")
# Peer name -> pinned pip requirements of its venv.
PEERS = {
    "kserve": ["kserve==0.21.0", "tensorflow-cpu==2.21.0"],
    # MLServer 1.7.1's worker pool calls asyncio.get_event_loop(), which uvloop 0.22+ rejects.
    "mlserver": ["mlserver==1.7.1", "tensorflow-cpu==2.21.0", "uvloop==0.21.0"],
    # The kserve package alone, for its v2 clients and its CRD models (tests/test_kserve.py).
    "kserve_client": ["kserve==0.21.0"],
}
V1_BODY = json.dumps({"instances": [1.0, 2.0, 5.0]}).encode()
V2_BODY = json.dumps({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0, 5.0]}]}).encode()
JSON = {"Content-Type": "application/json"}
V2_PATH = "/v2/models/half_plus_three/infer"


def log(message: str) -> None:
    print(f"[peers] {message}", file=sys.stderr, flush=True)


def ensure_venv(name: str) -> Path:
    """The peer's python, creating and installing its venv once (later runs reuse it)."""
    root = (VENVS / name).resolve()
    python = root / "bin" / "python"
    marker = root / ".installed"
    if marker.exists():
        return python
    print(f"[bench] setting up the {name} venv in {root} (once)", file=sys.stderr, flush=True)
    venv.create(root, with_pip=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS[name]], check=True)
    marker.touch()
    return python


def version(python: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version('{package}'))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@dataclass
class Server:
    name: str
    url: str
    body: bytes
    version: str
    proc: subprocess.Popen | None = None
    stop_fn: Any = None

    def stop(self) -> None:
        if self.stop_fn is not None:
            self.stop_fn()
        elif self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_answering(url: str, body: bytes, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until the server answers 200 (then warm every worker); a server that never does is killed."""
    try:
        _wait_answering(url, body, proc, timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _wait_answering(url: str, body: bytes, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            if requests.post(url, data=body, headers=JSON, timeout=5).status_code == 200:
                for _ in range(50):  # every worker loads the model before measuring
                    requests.post(url, data=body, headers=JSON, timeout=30)
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def start_kserve(port: int, workers: int, version_dir: Path, v2: bool) -> Server:
    python = ensure_venv("kserve")
    argv = [str(python), str(SERVERS / "kserve_half_plus_three.py"), "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(
        [*argv, "--model-path", str(version_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    url, body = (base + V2_PATH, V2_BODY) if v2 else (f"{base}/v1/models/half_plus_three:predict", V1_BODY)
    wait_answering(url, body, proc)
    return Server(f"kserve_x{workers}", url, body, version(python, "kserve"), proc)


def start_mlserver(port: int, workers: int, version_dir: Path, v2: bool) -> Server:
    """MLServer speaks v2 only, so both protocols send it the v2 request."""
    python = ensure_venv("mlserver")
    folder = Path(tempfile.mkdtemp(prefix="mlserver-"))
    shutil.copy(SERVERS / "mlserver_half_plus_three.py", folder / "mlserver_half_plus_three.py")
    settings = {"http_port": port, "grpc_port": port + 1, "metrics_port": port + 2, "parallel_workers": workers}
    (folder / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": "half_plus_three",
        "implementation": "mlserver_half_plus_three.HalfPlusThree",
        "parameters": {"uri": str(version_dir.resolve())},
    }
    (folder / "model-settings.json").write_text(json.dumps(model))
    mlserver = python.parent / "mlserver"
    proc = subprocess.Popen([str(mlserver), "start", str(folder)], cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}/v2/models/half_plus_three/infer"
    wait_answering(url, V2_BODY, proc)
    return Server(f"mlserver_x{workers}", url, V2_BODY, version(python, "mlserver"), proc)


def start_ours(name: str, model_dir: Path, env: dict[str, str], v2: bool) -> Server:
    from importlib.metadata import version as pkg_version

    from bench.stack import start_stack

    run_dir = Path(tempfile.mkdtemp(prefix="sagestack-peers-"))
    stack = start_stack(model_dir, run_dir, SAGEMAKER_GUNICORN_LOGLEVEL="warning", **env)
    url, body = (stack.url + V2_PATH, V2_BODY) if v2 else (stack.url + "/invocations", V1_BODY)
    return Server(name, url, body, pkg_version("sagestack"), stop_fn=stack.stop)


def run(args: argparse.Namespace) -> int:
    from bench.stack import demo_model_dir, free_port

    v2 = args.protocol == "v2"
    out: Path = args.out or Path(f"build/bench/peers{'_v2' if v2 else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    models = demo_model_dir(out.parent / "peers")
    version_dir = models / "half_plus_three" / "1"
    tuned_env = read_env_file(args.tuned_env) if args.tuned_env.exists() else None
    if tuned_env is None:
        log(f"{args.tuned_env} is missing: run `sagestack tune --model half_plus_three --slo-ms 50` first; "
            "measuring ours at defaults only")  # fmt: skip
    servers: list[Server] = []
    try:
        servers.append(start_ours("sagestack_default", models, {}, v2))
        if tuned_env:
            servers.append(start_ours("sagestack_tuned", models, tuned_env, v2))
        for peer, start in (("kserve", start_kserve), ("mlserver", start_mlserver)):
            if peer in args.skip:
                continue
            log(f"starting {peer} ({args.peer_workers} workers)")
            servers.append(start(free_port(), args.peer_workers, version_dir, v2))
        runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
        for r in range(args.rounds):
            for s in servers:
                result = loadgen.wrk(s.url, s.body, JSON, args.seconds, args.connections, args.loadgen_cpus or None)
                runs[s.name].append(result)
                log(f"round {r + 1}/{args.rounds} {s.name}: {result['rps']:.0f} TPS, p95 {result['p95_ms']:.1f} ms")
    finally:
        for s in servers:
            s.stop()
    report = summarize(runs, {s.name: s.version for s in servers}, {s.name: s.url for s in servers}, args)
    out.write_text(json.dumps(report, indent=2))
    plot(report, out.with_suffix(".png"))
    print(json.dumps({k: report[k] for k in ("servers", "ratio_vs_best_peer")}, indent=2))
    return 0


def summarize(runs: dict[str, list[dict[str, Any]]], versions: dict[str, str], urls: dict[str, str],
              args: argparse.Namespace) -> dict:  # fmt: skip
    servers = {
        name: {
            "tps": statistics.median(r["rps"] for r in results),
            "p50_ms": statistics.median(r["p50_ms"] for r in results),
            "p95_ms": statistics.median(r["p95_ms"] for r in results),
            "errors": sum(r["non_2xx"] + r["socket_errors"] for r in results),
            "version": versions[name],
            "url": urls[name],
        }
        for name, results in runs.items()
    }
    peers = {n: v for n, v in servers.items() if not n.startswith("sagestack")}
    ours = servers.get("sagestack_tuned") or servers["sagestack_default"]
    best_peer = max(peers.values(), key=lambda v: v["tps"]) if peers else None
    return {
        "model": "half_plus_three (the same SavedModel in every server)",
        "protocol": "OIP v2 to every server" if args.protocol == "v2" else "each server's native protocol",
        "load": f"wrk, {args.connections} connections, {args.seconds:g}s x {args.rounds} interleaved rounds; "
        f"wrk on CPU(s) {args.loadgen_cpus or 'any'}",
        "servers": servers,
        "ratio_vs_best_peer": ours["tps"] / best_peer["tps"] if best_peer else None,
        "p95_vs_best_peer": ours["p95_ms"] / best_peer["p95_ms"] if best_peer else None,
        "runs": runs,
    }


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = report["servers"]
    names = list(servers)
    colors = ["tab:green" if n.startswith("sagestack") else "tab:gray" for n in names]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.bar(names, [servers[n]["tps"] for n in names], color=colors)
    a.set_ylabel("TPS (median)")
    b.bar(names, [servers[n]["p95_ms"] for n in names], color=colors)
    b.set_ylabel("p95 ms (median)")
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=20)
    ratio = report["ratio_vs_best_peer"]
    title = f"half_plus_three, {report['protocol']}, same load"
    fig.suptitle(f"{title}: ours / best peer TPS = {ratio:.2f}" if ratio else title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
