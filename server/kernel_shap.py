"""Kernel SHAP (Lundberg and Lee, 2017), small and in numpy: Shapley values of a black-box model's score.

A coalition z (a 0/1 mask over M features) is scored as the model's output on the record with the features
outside z replaced by the baseline's. The attributions φ solve a least-squares fit of those scores, weighted by
the Shapley kernel (M-1) / (C(M,|z|) |z| (M-|z|)), under the constraint Σφ = f(x) - f(baseline), so the base value
plus the attributions is the prediction exactly. With every coalition (2^M - 2 of them, when the sample budget
allows) the fit gives the exact Shapley values; otherwise coalitions are drawn by the kernel's size distribution,
each with its complement, as the shap package and SageMaker Clarify do.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def sample_count(features: int, asked: int | None) -> int:
    """Clarify's rule: NumberOfSamples (default 2M + 2048), at most the 2^M - 2 coalitions there are."""
    budget = asked if asked is not None else 2 * features + 2048
    return max(1, min(budget, 2**features - 2)) if features > 1 else 0


def coalitions(features: int, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(masks [S, M] bool, weights [S]): every coalition with its kernel weight when `samples` covers them all,
    else `samples` drawn in complementary pairs, each weighing the same (the draw follows the kernel already)."""
    m = features
    if m < 2:
        return np.zeros((0, m), bool), np.zeros(0)
    if samples >= 2**m - 2:
        masks = np.array([bits for bits in itertools.product((False, True), repeat=m) if 0 < sum(bits) < m])
        sizes = masks.sum(axis=1)
        weights = np.array([(m - 1) / (math.comb(m, k) * k * (m - k)) for k in sizes])
        return masks, weights
    sizes = np.arange(1, m)
    by_size = (m - 1) / (sizes * (m - sizes))
    pairs = (samples + 1) // 2
    chosen = rng.choice(sizes, size=pairs, p=by_size / by_size.sum())
    masks = np.zeros((2 * pairs, m), bool)
    for i, k in enumerate(chosen):
        on = rng.choice(m, size=k, replace=False)
        masks[2 * i, on] = True
        masks[2 * i + 1] = ~masks[2 * i]
    masks = masks[:samples]
    return masks, np.ones(len(masks))


def attributions(masks: np.ndarray, weights: np.ndarray, scores: np.ndarray, prediction: float,
                 base: float) -> np.ndarray:  # fmt: skip
    """φ [M] from the coalitions' scores, with Σφ = prediction - base exactly."""
    m = masks.shape[1]
    total = prediction - base
    if m == 1:
        return np.array([total])
    z = masks.astype(np.float64)
    # Eliminate the last feature: φ_M = total - Σ_{j<M} φ_j, then weighted least squares over the others.
    x = z[:, :-1] - z[:, -1:]
    y = scores - base - z[:, -1] * total
    sw = np.sqrt(weights)[:, None]
    head, *_ = np.linalg.lstsq(x * sw, y * sw[:, 0], rcond=None)
    return np.append(head, total - head.sum())
