"""`sagestack anomaly train DATASET`: learn normal, calibrate, evaluate, export for serving.

Normal training images become the detector's memory; anomalous training images (and the normal
ones, each left out of the memory) set the threshold. The test split gives precision, recall, F1, AUROC
and recall per defect kind, a table, and a gallery PNG with heat maps.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from models.anomaly import dataset as ds
from models.anomaly import model
from models.anomaly.preprocess import to_input
from models.anomaly.projects import TrainingStatus
from models.anomaly.samples import samples
from server import modeldir
from server.handler_kit import decode_image

Progressed = Callable[[str, int, int], None]
SERVING = Path(__file__).with_name("serving")


def log(message: str) -> None:
    print(f"[anomaly] {message}", file=sys.stderr, flush=True)


def _inputs(items: list[ds.Item], roi: list[int] | None, image_size: list[int]) -> np.ndarray:
    return np.stack([to_input(decode_image(i.path.read_bytes()), roi, image_size) for i in items])


def auroc(truth: np.ndarray, scores: np.ndarray) -> float:
    """The chance that an anomalous image outscores a normal one (ties count half): the area under the ROC curve."""
    pos, neg = scores[truth][:, None], scores[~truth][None]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def metrics(items: list[ds.Item], scores: np.ndarray, threshold: float) -> dict:
    truth = np.array([i.anomalous for i in items])
    predicted = scores >= threshold
    tp, fp = int((predicted & truth).sum()), int((predicted & ~truth).sum())
    fn = int((~predicted & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    per_kind = {}
    for kind in sorted({i.kind for i in items if i.anomalous and i.kind}):
        hits = [p for p, i in zip(predicted, items, strict=True) if i.kind == kind]
        per_kind[kind] = {"recall": float(np.mean(hits)), "n": len(hits)}
    normal_hits = [not p for p, i in zip(predicted, items, strict=True) if not i.anomalous]
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "auroc": auroc(truth, scores) if 0 < truth.sum() < len(truth) else None,
        "per_kind": per_kind,
        "normal_specificity": float(np.mean(normal_hits)) if normal_hits else None,
        "threshold": threshold,
    }


def gallery(items: list[ds.Item], scores: np.ndarray, maps: np.ndarray, threshold: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-scores)
    show = list(order[:8]) + list(order[-4:]) if len(order) > 12 else list(order)
    cols = 4
    rows = (len(show) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, k in zip(axes.flat, show, strict=False):
        item = items[k]
        img = Image.open(item.path).convert("RGB")
        ax.imshow(img)
        ax.imshow(
            maps[k],
            cmap="inferno",
            alpha=0.45,
            extent=(0, img.width, img.height, 0),
            vmin=min(0.0, threshold - 1),
            vmax=max(threshold * 1.5, threshold + 1),
        )
        verdict = scores[k] >= threshold
        color = "green" if verdict == item.anomalous else "red"
        label = item.kind or ("anomaly" if item.anomalous else "normal")
        ax.set_title(f"{label}\nscore {scores[k]:.2f} ({'ANOMALY' if verdict else 'ok'})", color=color, fontsize=9)
    fig.suptitle(f"test images, highest and lowest scores (threshold {threshold:.2f}; red = wrong)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def stability(items: list[ds.Item], scores: np.ndarray, cuts: np.ndarray) -> dict:
    """How the threshold moves when the training images are resampled, and what that does to the test F1."""
    f1 = [metrics(items, scores, float(cut))["f1"] for cut in cuts]
    return {"resamples": len(cuts), "threshold_sd": float(np.std(cuts)),
            "threshold_p5_p95": [float(np.percentile(cuts, 5)), float(np.percentile(cuts, 95))],
            "test_f1_p5_p95": [float(np.percentile(f1, 5)), float(np.percentile(f1, 95))]}  # fmt: skip


@dataclass
class Evaluated:
    scorer: model.Scorer
    threshold: float
    spread: float
    result: dict
    scores: np.ndarray  # the test images'
    maps: np.ndarray
    normal_loo: np.ndarray  # the calibration scores: the normal training images', each left out of the memory
    train_anomaly: np.ndarray  # and the anomalous training images'


def fit_and_evaluate(
    data: ds.Dataset, roi: list[int] | None, image_size: list[int], geometry: model.Geometry, step: Progressed
) -> Evaluated:
    """Learn normal from the training split, calibrate the threshold with its anomalies, score the test split."""
    normal = [i for i in data.train if not i.anomalous]
    anomalous = [i for i in data.train if i.anomalous]
    log("fitting on normal images")
    with Progress(TextColumn("[bold]calibrating the normal spread"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:  # fmt: skip
        task = bar.add_task("calibrate", total=len(normal))

        def calibrated(i: int, n: int) -> None:
            bar.update(task, completed=i, total=n)
            step("calibrating the normal spread", i, n)

        step("learning normal patches", 0, len(normal))
        fitted = model.fit(_inputs(normal, roi, image_size), geometry, calibrated)
    scorer = model.Scorer(fitted)
    anomaly_scores = scorer.score(_inputs(anomalous, roi, image_size))[0] if anomalous else np.array([])
    threshold = model.choose_threshold(fitted.normal_scores, anomaly_scores)
    cuts = model.bootstrap_thresholds(fitted.normal_scores, anomaly_scores)
    spread = float(np.std(np.concatenate([fitted.normal_scores, anomaly_scores])) or 1.0)
    log(f"threshold {threshold:.3f} (normal LOO max {fitted.normal_scores.max():.3f})")
    log(f"scoring {len(data.test)} test images")
    step("scoring the test images", 0, len(data.test))
    scores, maps = scorer.score(_inputs(data.test, roi, image_size))
    result = metrics(data.test, scores, threshold) | {"threshold_stability": stability(data.test, scores, cuts)}
    return Evaluated(scorer, threshold, spread, result, scores, maps, fitted.normal_scores, anomaly_scores)


def train(
    root: Path,
    out: Path,
    reports: Path,
    roi: list[int] | None = None,
    version: int = 1,
    seed: int = 0,
    geometry: model.Geometry = model.DEFAULT_GEOMETRY,
    progress: Progressed | None = None,
) -> dict:
    """`progress(phase, done, total)` hears each step (a project's training job reports it)."""
    step = progress or (lambda phase, done, total: None)
    data = ds.load(root, seed)
    reports.mkdir(parents=True, exist_ok=True)
    image_size = list(Image.open(data.train[0].path).size)
    n_train, n_test = data.counts(data.train), data.counts(data.test)
    log(f"train {n_train}, test {n_test} ({'test/ folder' if data.explicit_test else 'stratified split'})")
    done = fit_and_evaluate(data, roi, image_size, geometry, step)
    scorer, threshold, spread, scores, maps = done.scorer, done.threshold, done.spread, done.scores, done.maps
    result = done.result | {"n_train": n_train, "n_test": n_test, "roi": roi}
    gallery(data.test, scores, maps, threshold, reports / "gallery.png")
    (reports / "metrics.json").write_text(json.dumps(result, indent=2))
    print_table(result)

    step("exporting", len(data.test), len(data.test))
    version_dir = modeldir.fresh_version(out, version)
    scorer.export(version_dir)
    preprocess = Path(__file__).with_name("preprocess.py")
    code = modeldir.export_code(out, "anomaly", SERVING / "inference.py", [preprocess], keep=True,
                                samples=samples())  # versions add up  # fmt: skip
    config_path = code / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {"versions": {}}
    config["versions"][str(version)] = {"threshold": threshold, "spread": spread, "roi": roi, "image_size": image_size}
    config_path.write_text(json.dumps(config, indent=1))
    log(f"exported to {version_dir}; metrics in {reports / 'metrics.json'}")
    return result


def print_table(result: dict) -> None:
    rows = [("precision", result["precision"]), ("recall", result["recall"]), ("F1", result["f1"])]
    rows += [("AUROC", result["auroc"] if result["auroc"] is not None else float("nan"))]
    rows += [(f"recall: {k}", v["recall"]) for k, v in result["per_kind"].items()]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:.3f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="train the anomaly detector")
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", type=Path, default=Path("build/model/anomaly"))
    p.add_argument("--reports", type=Path, default=Path("build/reports/anomaly"))
    p.add_argument("--roi", type=int, nargs=4, metavar=("X", "Y", "W", "H"), help="region of interest")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--fast", action="store_true", help="coarser grid, smaller memories: ~6x faster, less accurate (tests)"
    )
    p.add_argument("--status", type=Path, help="write progress and the outcome here, as JSON (a project's job)")
    args = p.parse_args(argv)
    geometry = model.Geometry.fast() if args.fast else model.DEFAULT_GEOMETRY
    status = TrainingStatus(args.status) if args.status else None
    try:
        result = train(args.dataset, args.out, args.reports, args.roi, args.version, args.seed, geometry,
                       status.progress if status else None)  # fmt: skip
    except ds.DatasetError as exc:
        if status:
            status.failed(str(exc))
        raise SystemExit(f"sagestack anomaly train: {exc}") from None
    except BaseException as exc:
        if status:
            status.failed(f"{type(exc).__name__}: {exc}")
        raise
    if status:
        status.trained(result)


if __name__ == "__main__":
    main()
