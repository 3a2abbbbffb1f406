"""`sagestack bench revisions --base REV`: `bench overhead` on an older revision and on this tree, interleaved.

A change that should cost no speed (a refactor of the house) is measured against where it started: the base
revision is checked out as a git worktree under build/bench/revisions/, then the two trees take turns, one
overhead round each, with the same venv, machine and settings. The full-stack TPS (wrk, c connections) and
the stack's added p50 latency are compared as medians and ratios; JSON and a PNG go to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.stack import ROOT

METRICS = ("stack_rps", "stack_added_p50_ms", "runtime_direct_rps")


def worktree(rev: str, where: Path) -> tuple[Path, str]:
    """A detached worktree of `rev` at `where` (reused when it is already there at that commit)."""
    commit = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True)
    if commit.returncode != 0:
        raise SystemExit(f"bench revisions: unknown revision {rev!r}: {commit.stderr.strip()}")
    sha = commit.stdout.strip()
    if (where / ".git").exists():
        current = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True)
        if current.stdout.strip() == sha:
            return where, sha
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=ROOT, check=True)
    where.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(where), sha], cwd=ROOT, check=True, capture_output=True)
    return where, sha


def overhead_round(tree: Path, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """One `bench overhead` round in `tree` (its own code first on sys.path), its summary numbers."""
    argv = [sys.executable, "-m", "server.cli", "bench", "overhead", "--rounds", "1", "--no-kserve",
            "--seconds", str(args.seconds), "--connections", str(args.connections),
            "--loadgen-cpus", args.loadgen_cpus, "--out", str(out)]  # fmt: skip
    result = subprocess.run(argv, cwd=tree, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"bench revisions: bench overhead failed in {tree}:\n{result.stderr[-3000:]}")
    summary = json.loads(out.read_text())["summary"]
    return {key: float(summary[key]) for key in METRICS}


def run(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    work = args.out.resolve().parent / "revisions"  # absolute: each tree's bench runs in its own directory
    base_tree, base_sha = worktree(args.base, work / "base")
    head_sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    trees = {"base": base_tree, "head": ROOT}
    rounds: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
    with Progress() as progress:
        task = progress.add_task("overhead rounds, base and head in turn", total=args.rounds * len(trees))
        for r in range(args.rounds):
            for label, tree in trees.items():
                numbers = overhead_round(tree, work / f"{label}_{r}.json", args)
                rounds[label].append(numbers)
                progress.console.log(f"round {r + 1} {label}: {numbers['stack_rps']:.0f} req/s, "
                                     f"added p50 {numbers['stack_added_p50_ms']:.3f} ms")  # fmt: skip
                progress.advance(task)
    median = {label: {k: statistics.median(n[k] for n in runs) for k in METRICS} for label, runs in rounds.items()}
    report: dict[str, Any] = {
        "base": {"rev": args.base, "commit": base_sha},
        "head": {"commit": head_sha, "dirty": _dirty()},
        "settings": {
            "seconds": args.seconds,
            "connections": args.connections,
            "rounds": args.rounds,
            "loadgen_cpus": args.loadgen_cpus,
            "stack": "bench overhead defaults: 1 gevent worker, "
            "1 runtime instance, OMP_NUM_THREADS=1, runtime threads 0 (TF's choice), both sides",
        },
        "rounds": rounds,
        "median": median,
        "head_vs_base": {k: median["head"][k] / median["base"][k] for k in METRICS if median["base"][k]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps({"median": median, "head_vs_base": report["head_vs_base"]}, indent=2))
    return 0


def _dirty() -> bool:
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    return bool(status.stdout.strip())


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, title in ((axes[0], "stack_rps", "full stack, req/s (wrk)"),
                           (axes[1], "stack_added_p50_ms", "stack's added p50, ms")):  # fmt: skip
        for x, label in enumerate(("base", "head")):
            values = [r[key] for r in report["rounds"][label]]
            ax.scatter([x] * len(values), values, color="grey", s=14, zorder=2)
            ax.bar(x, report["median"][label][key], color=("#8da0cb", "#66c2a5")[x], zorder=1)
        ax.set_xticks([0, 1], [f"base {report['base']['commit'][:7]}", f"head {report['head']['commit'][:7]}"])
        ratio = report["head_vs_base"].get(key)
        ax.set_title(f"{title}\nhead/base {ratio:.3f}" if ratio else title, fontsize=9)
    fig.suptitle("bench overhead, base and head interleaved (median bars, rounds as dots)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
