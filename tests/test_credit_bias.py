"""Clarify pre-training metrics against values computed by hand on a 10-row table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from models.credit_risk.bias import EXPLANATIONS, pretraining_metrics

# facet a (m): 6 rows, 4 favourable; facet d (f): 4 rows, 1 favourable.
TABLE = pd.DataFrame(
    {
        "sex": ["m", "m", "m", "m", "m", "m", "f", "f", "f", "f"],
        "y": [1, 1, 1, 1, 0, 0, 1, 0, 0, 0],
        "group": ["A", "A", "A", "B", "B", "B", "A", "A", "B", "B"],
    }
)


def test_metrics_match_hand_computed_values():
    m = pretraining_metrics(TABLE, "sex", ["f"], "y", [1], group="group")
    p_a, p_d = [1 / 3, 2 / 3], [3 / 4, 1 / 4]  # label distributions over (0, 1)
    assert m["CI"] == pytest.approx((6 - 4) / 10)
    assert m["DPL"] == pytest.approx(4 / 6 - 1 / 4)
    assert m["KL"] == pytest.approx(1 / 3 * math.log((1 / 3) / (3 / 4)) + 2 / 3 * math.log((2 / 3) / (1 / 4)))
    assert m["KL"] == pytest.approx(0.383576, abs=1e-6)
    mix = [(a + d) / 2 for a, d in zip(p_a, p_d, strict=True)]
    kl = lambda p, q: sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))  # noqa: E731
    assert m["JS"] == pytest.approx(0.5 * (kl(p_a, mix) + kl(p_d, mix)))
    assert m["JS"] == pytest.approx(0.090246, abs=1e-6)
    assert m["TVD"] == pytest.approx(5 / 12)
    assert m["KS"] == pytest.approx(5 / 12)
    assert m["LP"] == pytest.approx(math.sqrt(2) * 5 / 12)
    # Group A: rejected {f} -> d share 1; accepted {m,m,m,f} -> 1/4; DD_A = 0.75.
    # Group B: rejected {m,m,f,f} -> 1/2; accepted {m} -> 0; DD_B = 0.5. CDDL = (5*0.75 + 5*0.5)/10.
    assert m["CDDL"] == pytest.approx(0.625)


def test_every_metric_is_explained_and_facets_must_split():
    m = pretraining_metrics(TABLE, "sex", ["f"], "y", [1], group="group")
    assert set(m) <= set(EXPLANATIONS)
    with pytest.raises(ValueError, match="must split"):
        pretraining_metrics(TABLE, "sex", ["x"], "y", [1])


def test_equal_facets_have_no_bias():
    equal = pd.DataFrame({"sex": ["m", "m", "f", "f"], "y": [1, 0, 1, 0]})
    m = pretraining_metrics(equal, "sex", ["f"], "y", [1])
    assert m == pytest.approx({"CI": 0.0, "DPL": 0.0, "KL": 0.0, "JS": 0.0, "LP": 0.0, "TVD": 0.0, "KS": 0.0})
