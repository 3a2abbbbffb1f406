"""`sagestack shadow report`: production against its shadow variant, from a running stack's /metrics.

On the same requests (the copies the shadow got): latency p50 and p95 of each side, read from the histograms
(linear within a bucket; buckets are 25 % apart), the copies answered, failed and dropped, and the mean agreement
of the answers (the production model's `agreement`: F1 of IoU-matched detections for yolov4, the share of equal
decisions for credit_risk) with the share of copies that agreed fully. Printed as a table, written as JSON and PNG.
"""

from __future__ import annotations

import json
import math
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

LATENCY = {"production": "sagestack_shadow_production_latency_seconds", "shadow": "sagestack_shadow_latency_seconds"}
AGREEMENT = "sagestack_shadow_agreement"
COPIES = "sagestack_shadow_invocations"


def scrape(url: str, token: str | None) -> str:
    request = urllib.request.Request(f"{url.rstrip('/')}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a cumulative histogram [(upper bound, count)], linear within its bucket."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, low, below = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return low
            return low + (bound - low) * ((rank - below) / (count - below) if count > below else 1.0)
        low, below = bound, count
    return low


def summarize(text: str) -> list[dict[str, Any]]:
    """One row per (endpoint, shadow variant) seen in the metrics."""
    hist: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    sums: dict[tuple[str, str, str], float] = defaultdict(float)
    copies: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    full: dict[tuple[str, str], float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            key = (labels.get("endpoint", ""), labels.get("variant", ""))
            if family.name == COPIES and sample.name.endswith("_total"):
                copies[key][labels["outcome"]] += sample.value
            elif sample.name.endswith("_bucket"):
                hist[(family.name, *key)].append((float(labels["le"]), sample.value))
                if family.name == AGREEMENT and labels["le"] == "0.99":
                    full[key] -= sample.value
            elif sample.name.endswith(("_sum", "_count")):
                sums[(sample.name, *key)] += sample.value
    rows = []
    for key in sorted(copies):
        n = sums[(f"{AGREEMENT}_count", *key)]
        counts = {outcome: int(copies[key].get(outcome, 0)) for outcome in ("ok", "error", "dropped")}
        row: dict[str, Any] = {"endpoint": key[0], "variant": key[1], **counts}
        for side, name in LATENCY.items():
            for q in (0.5, 0.95):
                value = quantile(hist[(name, *key)], q)
                row[f"{side}_p{round(q * 100)}_ms"] = None if value is None else round(value * 1000, 2)
        row["agreement"] = round(sums[(f"{AGREEMENT}_sum", *key)] / n, 4) if n else None
        row["fully_agreed"] = round((n + full[key]) / n, 4) if n else None
        rows.append(row)
    return rows


def write(rows: list[dict[str, Any]], png: Path, out_json: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(rows, indent=2))
    fig, axes = plt.subplots(1, max(1, len(rows)), figsize=(5.5 * max(1, len(rows)), 4), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=False):
        labels = ["p50", "p95"]
        for offset, side in ((-0.2, "production"), (0.2, "shadow")):
            values = [row[f"{side}_{q}_ms"] or 0 for q in labels]
            ax.bar([i + offset for i in range(2)], values, width=0.4, label=side if side == "production" else
                   f"shadow ({row['variant']})")  # fmt: skip
        ax.set_xticks(range(2), labels)
        ax.set_ylabel("latency on the same requests (ms)")
        agreement = "n/a" if row["agreement"] is None else f"{row['agreement']:.3f}"
        ax.set_title(f"{row['endpoint']}: agreement {agreement}\n{row.get('ok', 0)} ok, {row.get('error', 0)} failed, "
                     f"{row.get('dropped', 0)} dropped", fontsize=10)  # fmt: skip
        ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
