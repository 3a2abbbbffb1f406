"""Data Wrangler-style analyses and the Clarify-style bias report, as PNGs plus one HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from models.credit_risk.bias import EXPLANATIONS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def table_summary(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.describe(include="all").T


def dtypes_and_nulls(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"dtype": frame.dtypes.astype(str), "nulls": frame.isna().sum(), "unique": frame.nunique()})


def plot_target(frame: pd.DataFrame, label: str, path: Path) -> Path:
    plt = _plt()
    counts = frame[label].value_counts()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(counts.index.astype(str), counts.to_numpy(), color=["tab:green", "tab:red"][: len(counts)])
    ax.set_title(f"Histogram of {label}")
    ax.set_ylabel("rows")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_age_by_risk(frame: pd.DataFrame, label: str, facet: str, path: Path) -> Path:
    """Age coloured by risk, one panel per facet value (Data Wrangler's colour-by and facet-by)."""
    plt = _plt()
    values = sorted(frame[facet].unique())
    fig, axes = plt.subplots(1, len(values), figsize=(5 * len(values), 3.5), sharey=True)
    bins = range(int(frame["age"].min()), int(frame["age"].max()) + 5, 5)
    for ax, value in zip(axes, values, strict=True):
        sub = frame[frame[facet] == value]
        for risk, color in (("low risk", "tab:green"), ("high risk", "tab:red")):
            ax.hist(sub.loc[sub[label] == risk, "age"], bins=bins, alpha=0.6, color=color, label=risk)
        ax.set_title(f"age by {label}, {facet} = {value}")
        ax.set_xlabel("age")
    axes[0].set_ylabel("rows")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_bias(metrics: dict[str, float], facet: str, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(metrics)
    ax.barh(names, [metrics[n] for n in names], color="tab:purple")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_title(f"Pre-training bias metrics, facet '{facet}'")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_importance(importance: dict[str, float], path: Path, top: int = 20) -> Path:
    plt = _plt()
    items = list(importance.items())[:top][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(items) + 1.5))
    ax.barh([k[:45] for k, _ in items], [v for _, v in items], color="tab:blue")
    ax.set_title("Quick Model feature importance (random forest)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_html(out: Path, frame: pd.DataFrame, report: dict[str, Any], images: dict[str, Path]) -> Path:
    parts = ["<html><head><meta charset='utf-8'><title>German credit: data, bias, model</title>"]
    parts.append("<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;font-size:12px}")
    parts.append("td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>")
    parts.append("<h1>German credit: data, bias and model report</h1>")
    parts.append("<h2>Table summary</h2>" + table_summary(frame).to_html(float_format="{:.3f}".format, na_rep=""))
    parts.append("<h2>Data types and nulls</h2>" + dtypes_and_nulls(frame).to_html())
    parts.append("<h2>Histograms</h2>")
    for key in ("target", "age_by_risk"):
        parts.append(f"<img src='{images[key].name}'>")
    for facet, metrics in report["bias"].items():
        parts.append(f"<h2>Pre-training bias, facet '{html.escape(facet)}'</h2><table>")
        parts.append("<tr><th>metric</th><th>value</th><th>how to read it</th></tr>")
        for name, value in metrics.items():
            parts.append(f"<tr><td>{name}</td><td>{value:.4f}</td><td>{html.escape(EXPLANATIONS[name])}</td></tr>")
        parts.append(f"</table><img src='{images['bias'].name}'>")
    quick = report["quick_model"]
    parts.append(f"<h2>Quick Model</h2><p>Held-out F1 (high risk): {quick['f1']:.3f}</p>")
    parts.append(f"<img src='{images['importance'].name}'>")
    parts.append("<h2>Served model</h2><pre>" + html.escape(json.dumps(report["model"], indent=1)) + "</pre>")
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path
