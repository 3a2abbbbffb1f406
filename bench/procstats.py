"""CPU and memory of the whole stack (nginx, gunicorn, runtimes), found from the port it listens on or its root."""

from __future__ import annotations

import itertools
from pathlib import Path

import psutil


def stack_processes(port: int) -> list[psutil.Process]:
    """The `sagestack serve` supervisor behind the listening port, and every process under it."""
    listener = next(
        (c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port and c.status == "LISTEN"),
        None,
    )
    if listener is None:
        raise RuntimeError(f"nothing listens on port {port}")
    proc = psutil.Process(listener)
    while proc.parent() is not None and "nginx" in proc.name():
        proc = proc.parent()  # nginx worker -> nginx master -> supervisor
    return [proc, *proc.children(recursive=True)]


class Sampler:
    """CPU% (100 = one core) and summed RSS of a process set between start() and stop()."""

    def __init__(self, processes: list[psutil.Process]) -> None:
        self.processes = processes
        self._cpu0 = 0.0

    def _cpu(self) -> float:
        total = 0.0
        for p in self.processes:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def rss_mb(self) -> float:
        total = 0
        for p in self.processes:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                continue
        return total / 2**20

    def start(self) -> None:
        self._cpu0 = self._cpu()

    def stop(self, seconds: float) -> dict[str, float]:
        return {"cpu_percent": 100 * (self._cpu() - self._cpu0) / seconds, "rss_mb": self.rss_mb()}


def label(proc: psutil.Process) -> str:
    """A stable name for a stack process: supervisor, nginx master/worker, gunicorn master/worker, runtime <id>."""
    cmd = proc.cmdline()
    text = " ".join(cmd)
    if "server.runtimes.model_server" in text:
        config = next((a.split("=", 1)[1] for a in cmd if a.startswith("--model_config_file=")), "?")
        return f"runtime {Path(config).stem}"
    if "-m gunicorn" in text:  # workers are forks of the master: tell them apart by their parent
        parent = proc.parent()
        return (
            "gunicorn worker"
            if parent is not None and "-m gunicorn" in " ".join(parent.cmdline())
            else "gunicorn master"
        )
    if text.startswith("nginx: master"):
        return "nginx master"
    if text.startswith("nginx: worker"):
        return "nginx worker"
    return "supervisor" if "server.cli" in text else proc.name()


def sample(root: psutil.Process) -> dict[str, dict[str, float]]:
    """RSS and PSS (MB) of the supervisor and every process under it, by label (several workers: #1, #2)."""
    out: dict[str, dict[str, float]] = {}
    for proc in sorted([root, *root.children(recursive=True)], key=lambda p: p.pid):
        try:
            name = label(proc)
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        key = name if name not in out else next(f"{name} #{i}" for i in itertools.count(2) if f"{name} #{i}" not in out)
        out[key] = {"rss_mb": info.rss / 2**20, "pss_mb": getattr(info, "pss", 0) / 2**20}
    return out
