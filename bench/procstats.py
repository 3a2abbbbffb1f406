"""CPU and memory of the whole stack (nginx, gunicorn, runtimes), found from the port it listens on."""

from __future__ import annotations

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
