"""Kernel SHAP against Shapley values by their definition, on models small enough to enumerate."""

from __future__ import annotations

import itertools
import math

import numpy as np

from server import kernel_shap


def exact_shapley(value, m: int) -> np.ndarray:
    out = np.zeros(m)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for k in range(m):
            for subset in itertools.combinations(others, k):
                weight = math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m)
                without = np.zeros(m, bool)
                without[list(subset)] = True
                with_i = without.copy()
                with_i[i] = True
                out[i] += weight * (value(with_i) - value(without))
    return out


def model(x: np.ndarray) -> float:
    """Nonlinear, with interactions: Shapley values are not just the coefficients."""
    return float(np.tanh(x[0] * x[1]) + 0.5 * x[2] ** 2 - x[0] * x[3] + 0.3 * x[1] * x[2] * x[3] + 0.2 * x[4])


def setup(m: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    record, baseline = rng.normal(size=m), rng.normal(size=m)

    def value(mask: np.ndarray) -> float:
        return model(np.where(mask, record, baseline))

    return value


def test_with_every_coalition_kernel_shap_is_the_exact_shapley_values_and_adds_up():
    m = 5
    value = setup(m)
    masks, weights = kernel_shap.coalitions(m, kernel_shap.sample_count(m, None), np.random.default_rng(0))
    assert len(masks) == 2**m - 2
    scores = np.array([value(mask) for mask in masks])
    full, empty = value(np.ones(m, bool)), value(np.zeros(m, bool))
    phi = kernel_shap.attributions(masks, weights, scores, full, empty)
    np.testing.assert_allclose(phi, exact_shapley(value, m), atol=1e-9)
    assert math.isclose(empty + phi.sum(), full, abs_tol=1e-12)


def test_sampled_coalitions_come_close_and_still_add_up_exactly():
    m = 5
    value = setup(m, seed=11)
    exact = exact_shapley(value, m)
    full, empty = value(np.ones(m, bool)), value(np.zeros(m, bool))
    masks, weights = kernel_shap.coalitions(m, 24, np.random.default_rng(7))  # fewer than the 30 there are
    assert len(masks) == 24 and all(0 < mask.sum() < m for mask in masks)
    phi = kernel_shap.attributions(masks, weights, np.array([value(z) for z in masks]), full, empty)
    assert math.isclose(empty + phi.sum(), full, abs_tol=1e-12)
    assert np.abs(phi - exact).max() < 0.25 * np.abs(exact).max()
    again, _ = kernel_shap.coalitions(m, 24, np.random.default_rng(7))
    assert (again == masks).all()  # a Seed makes it repeatable


def test_clarifys_sample_budget():
    assert kernel_shap.sample_count(20, None) == 2 * 20 + 2048
    assert kernel_shap.sample_count(4, None) == 14 and kernel_shap.sample_count(20, 300) == 300
