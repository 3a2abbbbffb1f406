"""Clarify-style pre-training bias metrics, from the formulas in SageMaker Clarify's documentation.

(AWS's `smclarify` 0.5 installs here only without its dependencies and then fails on pandas 3's
string dtype, so the documented formulas are implemented directly.)

Notation: facet `a` is the advantaged group (every value not chosen), facet `d` the disadvantaged
one (the chosen facet values); n_a, n_d are their sizes; q_a, q_d their shares of the favourable
label; P_a, P_d the label distributions within each facet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

EXPLANATIONS = {
    "CI": "Class imbalance (n_a - n_d)/(n_a + n_d): +1 only facet a, -1 only facet d, 0 balanced.",
    "DPL": "Difference in positive proportions in labels q_a - q_d: > 0 means facet a gets the favourable "
    "label more often.",
    "KL": "Kullback-Leibler divergence KL(P_a || P_d) of the label distributions: 0 when equal, grows "
    "without bound as they diverge.",
    "JS": "Jensen-Shannon divergence, the symmetric average KL of each facet to their mixture: 0 equal, at most ln 2.",
    "LP": "Lp-norm (p=2) distance between the facets' label distributions: 0 equal, up to sqrt(2).",
    "TVD": "Total variation distance, half the L1 distance between the label distributions: 0 equal, 1 disjoint.",
    "KS": "Kolmogorov-Smirnov: the largest gap between the facets' label distributions, 0 to 1.",
    "CDDL": "Conditional demographic disparity in labels: demographic disparity (facet d's share of "
    "rejections minus its share of acceptances) averaged over subgroups weighted by size; > 0 means facet "
    "d is rejected more than accepted even within subgroups.",
}


def _distribution(labels: pd.Series, values: Sequence[Any]) -> list[float]:
    counts = labels.value_counts()
    n = len(labels)
    return [counts.get(v, 0) / n for v in values]


def _kl(p: Sequence[float], q: Sequence[float]) -> float:
    total = 0.0
    for pi, qi in zip(p, q, strict=True):
        if pi > 0:
            if qi == 0:
                return math.inf
            total += pi * math.log(pi / qi)
    return total


def demographic_disparity(facet_d: pd.Series, favourable: pd.Series) -> float:
    """DD = n_d(rejected)/n(rejected) - n_d(accepted)/n(accepted)."""
    rejected, accepted = ~favourable, favourable
    share_rejected = (facet_d & rejected).sum() / rejected.sum() if rejected.sum() else 0.0
    share_accepted = (facet_d & accepted).sum() / accepted.sum() if accepted.sum() else 0.0
    return float(share_rejected - share_accepted)


def pretraining_metrics(
    frame: pd.DataFrame,
    facet: str,
    facet_values: Sequence[Any],
    label: str,
    favourable: Sequence[Any],
    group: str | None = None,
) -> dict[str, float]:
    """Every metric for one facet column; `facet_values` name the disadvantaged facet d."""
    is_d = frame[facet].isin(facet_values)
    if is_d.all() or not is_d.any():
        raise ValueError(f"facet '{facet}' values {list(facet_values)} must split the data in two")
    n_d, n_a = int(is_d.sum()), int((~is_d).sum())
    fav = frame[label].isin(favourable)
    labels = sorted(frame[label].unique(), key=str)
    p_a = _distribution(frame.loc[~is_d, label], labels)
    p_d = _distribution(frame.loc[is_d, label], labels)
    mix = [(a + d) / 2 for a, d in zip(p_a, p_d, strict=True)]
    metrics = {
        "CI": (n_a - n_d) / (n_a + n_d),
        "DPL": float(fav[~is_d].mean() - fav[is_d].mean()),
        "KL": _kl(p_a, p_d),
        "JS": 0.5 * (_kl(p_a, mix) + _kl(p_d, mix)),
        "LP": math.sqrt(sum((a - d) ** 2 for a, d in zip(p_a, p_d, strict=True))),
        "TVD": 0.5 * sum(abs(a - d) for a, d in zip(p_a, p_d, strict=True)),
        "KS": max(abs(a - d) for a, d in zip(p_a, p_d, strict=True)),
    }
    if group is not None:
        total = 0.0
        for _, sub in frame.groupby(group, observed=True):
            total += len(sub) * demographic_disparity(sub[facet].isin(facet_values), sub[label].isin(favourable))
        metrics["CDDL"] = total / len(frame)
    return {k: float(v) for k, v in metrics.items()}
