"""`sagestack tune --model M --slo-ms X`: find the env-var configuration that serves M best.

SageMaker's advice is to sweep gunicorn workers, instance count, OMP and the TF thread pools by
hand and watch TPS and p95. This does it with successive halving instead of the full grid: many
configurations get a short measurement, the better half a longer one, and so on. Each measurement
restarts the stack with that configuration (`sagestack serve`, only model M) and holds a fixed
number of users on it. Results go to a JSON file after every measurement, so an interrupted sweep
resumes where it stopped. The winner is written as an env file that `make serve ENV_FILE=...`,
the k8s ConfigMap and `sagestack push --env-file` all take.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.settings import env_defaults, write_env_file

SPACE: dict[str, list[Any]] = {
    "SAGEMAKER_GUNICORN_WORKERS": [1, 2, 4],
    "SAGEMAKER_GUNICORN_WORKER_CLASS": ["gevent", "gevent_h1c", "gevent_pywsgi", "gthread"],
    "SAGEMAKER_TFS_INSTANCE_COUNT": [1, 2],
    "OMP_NUM_THREADS": [1, 2],
    "SAGEMAKER_TFS_INTER_OP_PARALLELISM": [0, 1, 2],
    "SAGEMAKER_TFS_INTRA_OP_PARALLELISM": [0, 1, 2],
    "SAGEMAKER_TFS_ENABLE_BATCHING": ["false", "true"],
}
GTHREAD_THREADS = 8
COLUMNS = [
    ("workers", "SAGEMAKER_GUNICORN_WORKERS"),
    ("class", "SAGEMAKER_GUNICORN_WORKER_CLASS"),
    ("instances", "SAGEMAKER_TFS_INSTANCE_COUNT"),
    ("OMP", "OMP_NUM_THREADS"),
    ("inter", "SAGEMAKER_TFS_INTER_OP_PARALLELISM"),
    ("intra", "SAGEMAKER_TFS_INTRA_OP_PARALLELISM"),
    ("batching", "SAGEMAKER_TFS_ENABLE_BATCHING"),
]

Config = dict[str, Any]


def sagemaker_defaults(space: dict[str, list[Any]]) -> Config:
    """The searched variables' defaults, from the settings module, typed like the space's values."""
    defaults = env_defaults()
    return {name: type(values[0])(defaults[name]) for name, values in space.items() if name in defaults}


Measure = Callable[[Config, float, int], dict[str, Any]]  # (config, seconds, repeat) -> one load step's result


def log(message: str) -> None:
    print(f"[tune] {message}", file=sys.stderr, flush=True)


def key(config: Config) -> str:
    return json.dumps(config, sort_keys=True)


def grid(space: dict[str, list[Any]]) -> list[Config]:
    names = list(space)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*space.values())]


def objective(result: dict[str, Any], slo_ms: float) -> float:
    """TPS when p95 meets the SLO; past it, TPS shrinks with the square of the overshoot."""
    p95 = result.get("p95_ms") or float("inf")
    tps = result["tps"] if not result.get("errors") else result["tps"] * 0.5
    return tps if p95 <= slo_ms else tps * (slo_ms / p95) ** 2


def successive_halving(
    configs: list[Config],
    measure: Measure,
    slo_ms: float,
    base_seconds: float,
    keep: float = 0.5,
    min_left: int = 1,
    reference: Config | None = None,
    final_rounds: int = 1,
) -> tuple[Config, list[dict[str, Any]]]:
    """Measure all configs for base_seconds, keep the best `keep` share at twice the time, repeat.

    `reference` (SageMaker's defaults) is measured in every rung, so the winner is always compared
    with it at the same measurement length; it survives a rung only on its merits, but when it beats
    the winner in the last rung it is the pick (noise can drop it early; never advise worse).
    The last rung measures its configurations `final_rounds` times, interleaved (A B R A B R ...),
    and scores each by its median round, so drift on a shared machine does not decide the pick.
    """
    history: list[dict[str, Any]] = []
    alive = list(configs)
    seconds = base_seconds
    rung = 0
    while True:
        extra = [reference] if reference is not None and reference not in alive else []
        last = len(alive) <= 2 * min_left
        rounds = max(1, final_rounds) if last else 1
        measured: dict[str, list[dict[str, Any]]] = {}
        todo = list(itertools.product(range(rounds), alive + extra))  # round by round: A B R A B R ...
        for i, (repeat, config) in enumerate(todo, 1):
            result = measure(config, seconds, repeat)
            record = {"config": config, "rung": rung, "seconds": seconds, "repeat": repeat, **result}
            record["objective"] = objective(result, slo_ms)
            history.append(record)
            measured.setdefault(key(config), []).append(record)
            log(f"rung {rung} ({seconds:g}s) {i}/{len(todo)}: {_short(config)} -> "
                f"{result['tps']:.1f} TPS, p95 {result.get('p95_ms')} ms")  # fmt: skip
        median = {k: median_record(rs) for k, rs in measured.items()}
        scored = sorted((median[key(c)] for c in alive), key=lambda r: -r["objective"])
        beside = [median[key(c)] for c in extra]  # the reference's record when it is measured but not alive
        if last:
            # The defaults, measured beside the winner, win back the pick when they did better.
            return max(scored + beside, key=lambda r: r["objective"])["config"], history
        alive = [r["config"] for r in scored[: max(min_left, int(len(scored) * keep))]]
        seconds *= 2
        rung += 1


def median_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The record with the median objective (the lower middle one of an even count)."""
    return sorted(records, key=lambda r: r["objective"])[(len(records) - 1) // 2]


def final_records(history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each configuration's median record at its longest measurement."""
    longest: dict[str, list[dict[str, Any]]] = {}
    for r in history:
        k = key(r["config"])
        if k not in longest or r["seconds"] > longest[k][0]["seconds"]:
            longest[k] = [r]
        elif r["seconds"] == longest[k][0]["seconds"]:
            longest[k].append(r)
    return {k: median_record(rs) for k, rs in longest.items()}


def _short(config: Config) -> str:
    return " ".join(f"{label}={config.get(name, '-')}" for label, name in COLUMNS if name in config)


def env_for(config: Config) -> dict[str, str]:
    env = {k: str(v) for k, v in config.items()}
    if env.get("SAGEMAKER_GUNICORN_WORKER_CLASS") == "gthread":
        env.setdefault("SAGEMAKER_GUNICORN_THREADS", str(GTHREAD_THREADS))
    return env


class StackMeasure:
    """One measurement: start the stack with the config (model M only), hold `users`, stop it."""

    def __init__(self, model: str, model_dir: Path, users: int, tool: str, cpus: str | None, results: Path) -> None:
        self.model, self.model_dir, self.users, self.tool, self.cpus = model, model_dir, users, tool, cpus
        self.results = results
        self.done = {(r["key"], r["seconds"], r.get("repeat", 0)): r for r in self._load()}
        self.only = Path(tempfile.mkdtemp(prefix="sagestack-tune-")) / "model"
        self.only.mkdir()
        (self.only / model).symlink_to((model_dir / model).resolve())

    def _load(self) -> list[dict[str, Any]]:
        return json.loads(self.results.read_text())["measurements"] if self.results.exists() else []

    def __call__(self, config: Config, seconds: float, repeat: int = 0) -> dict[str, Any]:
        cached = self.done.get((key(config), seconds, repeat))
        if cached is not None:
            log(f"resumed from {self.results}: {_short(config)} ({seconds:g}s)")
            return {k: cached[k] for k in ("tps", "p50_ms", "p95_ms", "p99_ms", "errors", "cpu_percent", "rss_mb")}
        from bench.load import run_steps
        from bench.stack import start_stack

        run_dir = Path(tempfile.mkdtemp(prefix="sagestack-tune-run-"))
        stack = start_stack(self.only, run_dir, SAGEMAKER_GUNICORN_LOGLEVEL="warning", **env_for(config))
        try:
            report = run_steps(stack.url, self.model, [self.users], seconds, self.tool, self.cpus)
        finally:
            stack.stop()
        result = report["steps"][0]
        record = {"key": key(config), "config": config, "seconds": seconds, "repeat": repeat, **result}
        self.done[(record["key"], seconds, repeat)] = record
        self.results.parent.mkdir(parents=True, exist_ok=True)
        self.results.write_text(json.dumps({"model": self.model, "measurements": list(self.done.values())}, indent=1))
        return result


def table(history: list[dict[str, Any]]) -> str:
    """The seed's table: one row per configuration, its median at its longest measurement."""
    rows = sorted(final_records(history).values(), key=lambda r: -r["objective"])
    head = [label for label, _ in COLUMNS] + ["TPS", "p95 ms", "seconds"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        cells = [str(r["config"].get(name, "-")) for _, name in COLUMNS]
        cells += [f"{r['tps']:.1f}", f"{r['p95_ms']:.1f}" if r.get("p95_ms") else "-", f"{r['seconds']:g}"]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    space = json.loads(args.space) if args.space else SPACE
    full = grid(space)
    rng = random.Random(args.seed)
    configs = full if len(full) <= args.configs else rng.sample(full, args.configs)
    default = sagemaker_defaults(space)
    if default in full and default not in configs:
        configs[0] = default  # always measure SageMaker's defaults, for the comparison
    out_dir = args.out_dir
    results = out_dir / f"{args.model}_measurements.json"
    measure = StackMeasure(args.model, args.model_dir, args.users, args.tool, args.loadgen_cpus or None, results)
    log(f"{len(configs)} of {len(full)} configurations, successive halving from {args.seconds:g}s")
    started = time.monotonic()
    reference = default if default in full else None
    best, history = successive_halving(
        configs,
        measure,
        args.slo_ms,
        args.seconds,
        min_left=args.finalists,
        reference=reference,
        final_rounds=args.final_rounds,
    )
    last_rung = max(r["rung"] for r in history)
    final = final_records(history)
    best_record = final[key(best)]
    defaults = [final[key(default)]] if final.get(key(default), {}).get("rung") == last_rung else []
    report = {
        "model": args.model,
        "slo_ms": args.slo_ms,
        "users": args.users,
        "search": "successive halving",
        "configurations_in_space": len(full),
        "configurations_measured": len({key(r["config"]) for r in history}),
        "measurements": len(history),
        "minutes": (time.monotonic() - started) / 60,
        "best": {"config": best, **{k: best_record[k] for k in ("tps", "p95_ms", "seconds")}},
        "history": history,
    }
    if defaults:
        d = defaults[0]  # measured in the same rung, for as long as the winner
        report["sagemaker_defaults"] = {"tps": d["tps"], "p95_ms": d["p95_ms"], "seconds": d["seconds"]}
        report["speedup_vs_defaults"] = best_record["tps"] / d["tps"] if d["tps"] else None
    note = f"sagestack tune --model {args.model} --slo-ms {args.slo_ms}"
    env_path = write_env_file(out_dir / f"{args.model}.env", env_for(best), note)
    report["env_file"] = str(env_path)
    (out_dir / f"{args.model}.json").write_text(json.dumps(report, indent=2))
    print(table(history))
    print(f"\nbest under p95 <= {args.slo_ms} ms: {_short(best)}: {best_record['tps']:.1f} TPS, "
          f"p95 {best_record['p95_ms']} ms -> {env_path}")  # fmt: skip
    if report.get("speedup_vs_defaults"):
        print(f"{report['speedup_vs_defaults']:.2f}x the TPS of SageMaker's defaults (1 worker, 1 instance)")
    return 0
