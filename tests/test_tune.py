"""Knee detection and the successive-halving search on synthetic curves; a tiny real sweep."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bench.load import knee
from bench.tune import env_for, grid, objective, run, successive_halving


def steps(tps, p95):
    return [{"users": 2**i, "tps": t, "p95_ms": p} for i, (t, p) in enumerate(zip(tps, p95, strict=True))]


def test_knee_where_tps_stops_growing():
    curve = steps([100, 190, 350, 360, 362], [10, 11, 12, 30, 80])
    assert knee(curve, None) == 2  # 360 is < 5% over 350


def test_knee_where_p95_passes_the_slo():
    curve = steps([100, 200, 400, 800], [10, 20, 60, 200])
    assert knee(curve, 50) == 1
    assert knee(steps([100], [70]), 50) is None


def test_objective_penalises_slo_misses():
    assert objective({"tps": 100, "p95_ms": 40}, 50) == 100
    assert objective({"tps": 100, "p95_ms": 100}, 50) == pytest.approx(25)
    assert objective({"tps": 100, "p95_ms": 40, "errors": 3}, 50) == 50


def test_successive_halving_finds_the_best_of_a_grid_with_fewer_measurements():
    space = {"workers": [1, 2, 3, 4], "instances": [1, 2], "omp": [1, 2]}
    configs = grid(space)

    def measure(config, seconds, repeat=0):  # a response surface with one clear optimum
        tps = 100 * config["workers"] - 30 * (config["workers"] - 3) ** 2 + 20 * config["instances"] - 5 * config["omp"]
        return {"tps": float(tps), "p95_ms": 10.0 * config["workers"], "errors": 0}

    best, history = successive_halving(configs, measure, slo_ms=35, base_seconds=1)
    truth = max(configs, key=lambda c: objective(measure(c, 1), 35))
    assert best == truth == {"workers": 3, "instances": 2, "omp": 1}
    assert len(history) < 2 * len(configs)
    assert {r["seconds"] for r in history} == {1, 2, 4, 8}


def test_defaults_that_beat_the_winner_in_the_last_rung_are_the_pick():
    configs = [{"workers": w} for w in (1, 2, 3, 4)]
    default = {"workers": 1}

    def measure(config, seconds, repeat=0):  # the defaults measure badly in the first rung only (noise), best later
        if config == default:
            return {"tps": 50.0 if seconds == 1 else 500.0, "p95_ms": 10.0, "errors": 0}
        return {"tps": 100.0 * config["workers"], "p95_ms": 10.0, "errors": 0}

    best, history = successive_halving(configs, measure, slo_ms=35, base_seconds=1, reference=default)
    assert best == default
    last = [r["config"] for r in history if r["rung"] == history[-1]["rung"]]
    assert last == [{"workers": 4}, {"workers": 3}, default]  # dropped in rung 0, measured beside the finalists


def test_the_last_rung_is_decided_by_interleaved_medians():
    """One lucky round must not pick the winner: A wins 2 of 3 interleaved rounds, B has the single best one."""
    rounds = {"A": [300.0, 310.0, 100.0], "B": [900.0, 200.0, 210.0]}

    def measure(config, seconds, repeat=0):
        return {"tps": rounds[config["name"]][repeat], "p95_ms": 10.0, "errors": 0}

    best, history = successive_halving(
        [{"name": "A"}, {"name": "B"}], measure, slo_ms=35, base_seconds=1, final_rounds=3
    )
    assert best == {"name": "A"}
    assert [(r["config"]["name"], r["repeat"]) for r in history] == [(n, i) for i in range(3) for n in "AB"]


def test_env_for_gthread_sets_threads():
    assert env_for({"SAGEMAKER_GUNICORN_WORKER_CLASS": "gthread"})["SAGEMAKER_GUNICORN_THREADS"] == "8"


@pytest.mark.stack
def test_tiny_real_sweep(model_dir, tmp_path):
    args = SimpleNamespace(
        model="half_plus_three",
        slo_ms=1000.0,
        users=4,
        seconds=2,
        configs=2,
        finalists=1,
        final_rounds=2,
        space=json.dumps({"SAGEMAKER_GUNICORN_WORKERS": [1, 2]}),
        model_dir=model_dir,
        out_dir=tmp_path,
        tool="wrk",
        loadgen_cpus="",
        seed=0,
    )
    assert run(args) == 0
    report = json.loads((tmp_path / "half_plus_three.json").read_text())
    assert report["configurations_measured"] == 2 and report["best"]["tps"] > 0
    env = (tmp_path / "half_plus_three.env").read_text()
    assert "SAGEMAKER_GUNICORN_WORKERS=" in env
    measurements = json.loads((tmp_path / "half_plus_three_measurements.json").read_text())["measurements"]
    assert sorted(m["repeat"] for m in measurements) == [0, 0, 1, 1]  # 2 interleaved rounds of the last rung
    # Resuming reuses the measurements instead of restarting the stack.
    assert run(args) == 0
    assert len(json.loads((tmp_path / "half_plus_three_measurements.json").read_text())["measurements"]) == 4
