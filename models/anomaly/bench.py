"""`sagestack anomaly bench`: the detector across data sets, with Lookout's 20 normal + 10 anomalous to train.

Data sets: the PCB generator, and real photographed surfaces with drawn defects (surfaces.py). Each seed makes its
own data set (20 + 10 to train, 50 + 50 to test); tuning seeds are for development, held-out seeds are never tuned
on, and the targets are judged on those. Per data set and seed: precision, recall, F1, AUROC, recall per defect kind,
the threshold, and the served graph's latency for one 256x256 image. JSON and a PNG under build/bench/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

DATASETS = ("pcb", "brick", "grass", "gravel")  # the generator's, then surfaces.SURFACES
TUNING_SEEDS = (0, 1)
HELD_OUT_SEEDS = (1000, 1001)
TARGET_F1, TARGET_AUROC = 0.95, 0.98
TRAIN, TEST = (20, 10), (50, 50)


def make(name: str, folder: Path, seed: int) -> Path:
    """The data set's folder (made once per name and seed)."""
    from models.anomaly import generate, surfaces

    if not (folder / "manifest.json").is_file():
        if name == "pcb":
            generate.make_dataset(folder, *TRAIN, seed, *TEST)
        else:
            surfaces.make_dataset(folder, name, *TRAIN, seed, *TEST)
    return folder


def latency_ms(scorer, image: np.ndarray, runs: int = 15) -> float:
    """The median time of the served graph on one image (after a warm-up call)."""
    import tensorflow as tf

    batch = tf.constant(image[None])
    scorer.module.serve(batch)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        scorer.module.serve(batch)["score"].numpy()
        times.append((time.perf_counter() - began) * 1000)
    return float(np.median(times))


def run_one(name: str, seed: int, data_root: Path, geometry) -> dict:
    from models.anomaly import dataset as ds
    from models.anomaly.train import _inputs, fit_and_evaluate

    data = ds.load(make(name, data_root / f"{name}-{seed}", seed))
    done = fit_and_evaluate(data, None, [256, 256], geometry, lambda *_: None)
    test_normal = [i for i in data.test if not i.anomalous]
    image = _inputs(test_normal[:1], None, [256, 256])[0]
    # The scores too, so that threshold rules can be compared on them without fitting again.
    scores = {"normal_loo": done.normal_loo.tolist(), "train_anomaly": done.train_anomaly.tolist(),
              "test": done.scores.tolist(), "test_anomalous": [i.anomalous for i in data.test],
              "test_kind": [i.kind for i in data.test]}  # fmt: skip
    return {"dataset": name, "seed": seed, "held_out": seed in HELD_OUT_SEEDS, **done.result,
            "latency_ms": latency_ms(done.scorer, image), "scores": scores}  # fmt: skip


def summary(runs: list[dict]) -> dict:
    """Per data set, over the held-out seeds: the worst F1 and AUROC, and whether both meet the targets."""
    out = {}
    for name in sorted({r["dataset"] for r in runs}):
        held = [r for r in runs if r["dataset"] == name and r["held_out"]] or [r for r in runs if r["dataset"] == name]
        worst_f1, worst_auroc = min(r["f1"] for r in held), min(r["auroc"] for r in held)
        out[name] = {"f1_min": worst_f1, "auroc_min": worst_auroc,
                     "f1_median": float(np.median([r["f1"] for r in held])),
                     "auroc_median": float(np.median([r["auroc"] for r in held])),
                     "latency_ms_median": float(np.median([r["latency_ms"] for r in held])),
                     "meets_targets": worst_f1 >= TARGET_F1 and worst_auroc >= TARGET_AUROC}  # fmt: skip
    return out


def plot(runs: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["dataset"] for r in runs}, key=DATASETS.index)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, target in ((axes[0], "f1", TARGET_F1), (axes[1], "auroc", TARGET_AUROC)):
        for offset, held, colour in ((-0.2, False, "tab:gray"), (0.2, True, "tab:blue")):
            for i, name in enumerate(names):
                values = [r[key] for r in runs if r["dataset"] == name and r["held_out"] == held]
                if values:
                    ax.bar(i + offset, np.median(values), width=0.38, color=colour,
                           label=("held-out seeds" if held else "tuning seeds") if i == 0 else None)  # fmt: skip
                    ax.scatter([i + offset] * len(values), values, color="black", s=10, zorder=3)
        ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"target {target}")
        ax.set_xticks(range(len(names)), names)
        ax.set_ylim(0.5, 1.01)
        ax.set_title(f"{key.upper()} (median bar, each seed a dot)")
        ax.legend(loc="lower left", fontsize=8)
    fig.suptitle("anomaly detection, 20 normal + 10 anomalous to train, 50 + 50 to test")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--out", type=Path, default=Path("build/bench/anomaly.json"))
    p.add_argument("--data", type=Path, default=Path("build/bench/anomaly_data"), help="where the data sets are made")
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, of {', '.join(DATASETS)}")
    p.add_argument("--seeds", default=",".join(map(str, TUNING_SEEDS + HELD_OUT_SEEDS)),
                   help=f"comma-separated; {', '.join(map(str, HELD_OUT_SEEDS))} are the held-out ones")  # fmt: skip
    p.add_argument("--fast", action="store_true", help="the coarser patch grid (as `anomaly train --fast`)")
    return p


def main(argv: list[str] | None = None) -> None:
    run(add_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0])).parse_args(argv))


def run(args: argparse.Namespace) -> None:
    names = [n for n in args.datasets.split(",") if n]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise SystemExit(f"sagestack anomaly bench: unknown data sets {unknown} (have: {', '.join(DATASETS)})")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    from models.anomaly import model

    geometry = model.Geometry.fast() if args.fast else model.DEFAULT_GEOMETRY
    plan = [(n, s) for n in names for s in seeds]
    runs = []
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("anomaly bench", total=len(plan))
        for name, seed in plan:
            bar.update(task, description=f"{name}, seed {seed}")
            runs.append(run_one(name, seed, args.data, geometry))
            bar.advance(task)
    result = {
        "runs": runs,
        "summary": summary(runs),
        "targets": {"f1": TARGET_F1, "auroc": TARGET_AUROC, "judged_on": "the held-out seeds' worst run"},
        "held_out_seeds": list(HELD_OUT_SEEDS),
        "geometry": dataclasses.asdict(geometry),
        "threads": {"tf_intra_op": "default (all cores)", "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    png = plot(runs, args.out.with_suffix(".png"))
    print(f"{'data set':<8} {'F1 min':>7} {'AUROC min':>9} {'ms/img':>7}  targets")
    for name, row in result["summary"].items():
        print(f"{name:<8} {row['f1_min']:7.3f} {row['auroc_min']:9.3f} {row['latency_ms_median']:7.1f}  "
              f"{'met' if row['meets_targets'] else 'missed'}")  # fmt: skip
    print(f"wrote {args.out} and {png}")
