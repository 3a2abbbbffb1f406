"""Production variants from SAGESTACK_ENDPOINT_CONFIG: the file's checks, the weighted split, the target variant,
weights set on a running stack, and the compiled twin as two variants of one endpoint."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from bench.stack import start_stack
from server import shadow_report
from server.endpoint_config import EndpointConfigError, for_botocore, parse
from server.errors import ApiError
from server.routes import RouteTable
from server.variants import Chooser, endpoints

CONFIG = {
    "EndpointConfigName": "hpt-canary",
    "ProductionVariants": [
        {"VariantName": "champion", "ModelName": "half_plus_three", "InitialVariantWeight": 3.0,
         "InstanceType": "ml.c5.xlarge", "InitialInstanceCount": 1},
        {"VariantName": "challenger", "ModelName": "hpt-challenger", "InitialVariantWeight": 1.0,
         "InstanceType": "ml.c5.xlarge", "InitialInstanceCount": 1},
    ],
}  # fmt: skip
MODELS = ["half_plus_three", "hpt_challenger", "yolov4", "yolov4_compiled"]


def table(config: dict, compiled_model: bool = True) -> RouteTable:
    routes = endpoints(parse(config, MODELS), MODELS, compiled_model, {})
    return RouteTable(endpoints=routes, default_model="hpt-canary")


# ---- the file ------------------------------------------------------------------------------------------------
def test_the_file_is_createendpointconfigs_request_and_model_names_take_sagemakers_spelling():
    config = parse(CONFIG, MODELS)
    assert [(v.name, v.model, v.weight) for v in config.variants] == [
        ("champion", "half_plus_three", 3.0), ("challenger", "hpt_challenger", 1.0)]  # fmt: skip
    assert config.shadow is None and config.capture is None and config.explainer is None


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: c["ProductionVariants"][1].update(ModelName="nope"), "ProductionVariants[1].ModelName"),
        (lambda c: c["ProductionVariants"][0].update(InitialVariantWeight="x"),
         "ProductionVariants[0].InitialVariantWeight"),
        (lambda c: c["ProductionVariants"][0].pop("VariantName"), '"VariantName"'),
        (lambda c: c["ProductionVariants"][1].update(VariantName="champion"), "ProductionVariants[1].VariantName"),
        (lambda c: c["ProductionVariants"][0].update(Colour="red"), "Colour"),
        (lambda c: c.update(EndpointConfigName="has_underscore"), "EndpointConfigName"),
        (lambda c: [v.update(InitialVariantWeight=0) for v in c["ProductionVariants"]], "InitialVariantWeight"),
        (lambda c: c.update(ShadowProductionVariants=[{"VariantName": "s", "ModelName": "yolov4"}]),
         "ProductionVariants"),
        (lambda c: c.update(DataCaptureConfig={"InitialSamplingPercentage": 5, "DestinationS3Uri": "s3://b/p"}),
         '"CaptureOptions"'),
        (lambda c: c.update(DataCaptureConfig={"InitialSamplingPercentage": 500, "DestinationS3Uri": "s3://b/p",
                                               "CaptureOptions": [{"CaptureMode": "Input"}]}),
         "DataCaptureConfig.InitialSamplingPercentage"),
    ],
)  # fmt: skip
def test_a_bad_file_names_the_field(change, named):
    config = json.loads(json.dumps(CONFIG))
    change(config)
    with pytest.raises(EndpointConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse(config, MODELS)


def test_a_shadows_sampling_percentage_is_sagestacks_and_is_left_out_for_sagemaker():
    config = {**CONFIG, "ProductionVariants": CONFIG["ProductionVariants"][:1],
              "ShadowProductionVariants": [{"VariantName": "shadow", "ModelName": "hpt_challenger",
                                            "InitialVariantWeight": 0.5, "SamplingPercentage": 20}]}  # fmt: skip
    assert parse(config, MODELS).shadow_percentage == 20
    assert "SamplingPercentage" not in for_botocore(config)["ShadowProductionVariants"][0]
    del config["ShadowProductionVariants"][0]["SamplingPercentage"]
    assert parse(config, MODELS).shadow_percentage == pytest.approx(100 * 0.5 / 3.0)  # SageMaker's: weight over weight


def test_a_bad_file_stops_serve_with_the_field_named(tmp_path, hpt_base):
    (tmp_path / "model").mkdir()
    shutil.copytree(hpt_base, tmp_path / "model" / "half_plus_three")
    bad = {**CONFIG, "ProductionVariants": [{"VariantName": "a", "ModelName": "half_plus_three",
                                             "InitialVariantWeight": -1}]}  # fmt: skip
    (tmp_path / "endpoint.json").write_text(json.dumps(bad))
    env = {"SAGESTACK_MODEL_DIR": str(tmp_path / "model"), "SAGESTACK_RUN_DIR": str(tmp_path / "run"),
           "SAGESTACK_ENDPOINT_CONFIG": str(tmp_path / "endpoint.json"), "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "server.cli", "serve"], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode != 0
    assert "ProductionVariants[0].InitialVariantWeight" in done.stderr


# ---- the split -----------------------------------------------------------------------------------------------
def test_requests_are_split_by_weight():
    chooser, routes = Chooser(seed=7), table(CONFIG)
    got = Counter(chooser.choose(routes, "hpt-canary", None, None).variant for _ in range(4000))
    assert abs(got["champion"] / 4000 - 0.75) < 0.025 and got["champion"] + got["challenger"] == 4000


def test_a_target_variant_pins_and_an_unknown_one_names_the_known():
    chooser, routes = Chooser(seed=7), table(CONFIG)
    assert {chooser.choose(routes, "hpt-canary", "challenger", None).model for _ in range(50)} == {"hpt_challenger"}
    with pytest.raises(ApiError) as err:
        chooser.choose(routes, "hpt-canary", "nope", None)
    assert err.value.status == 400 and "champion, challenger" in err.value.message


def test_the_compiled_twin_is_an_endpoint_of_two_variants_with_compiledmodel_and_compiled_as_shorthands():
    for compiled_model, expected in ((True, "yolov4_compiled"), (False, "yolov4")):
        routes = table(CONFIG, compiled_model)
        choice = Chooser(seed=1).choose(routes, "yolov4", None, None)
        assert (choice.endpoint, choice.model) == ("yolov4", expected)
    routes = table(CONFIG)
    assert Chooser(1).choose(routes, "yolov4", None, "false").variant == "uncompiled"
    assert Chooser(1).choose(routes, "yolov4", "uncompiled", None).model == "yolov4"
    assert Chooser(1).choose(routes, "yolov4_compiled", None, None).variant == "compiled"  # its model: pinned
    assert Chooser(1).choose(routes, "half_plus_three", None, None).variant == "champion"
    with pytest.raises(ApiError, match="AllTraffic"):
        Chooser(1).choose(RouteTable(), "half_plus_three", "champion", None)


# ---- through the stack ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def canary(hpt_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    for name in ("half_plus_three", "hpt_challenger"):
        shutil.copytree(hpt_base, root / "model" / name)
    (root / "endpoint.json").write_text(json.dumps(CONFIG))
    stack = start_stack(root / "model", root / "run", SAGESTACK_ENDPOINT_CONFIG=str(root / "endpoint.json"),
                        SAGEMAKER_GUNICORN_WORKERS="2", SAGESTACK_VARIANT_SEED="11")  # fmt: skip
    yield stack
    assert stack.stop() == 0


def invoke(stack, headers=None, attributes=None):
    headers = {"Content-Type": "application/json", **(headers or {})}
    if attributes:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
    return requests.post(f"{stack.url}/invocations", data=b'{"instances": [1.0]}', headers=headers, timeout=30)


def variant_counts(stack) -> dict[str, float]:
    text = requests.get(f"{stack.url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sagestack_variant_invocations_total{"):
            labels, value = line.rsplit(" ", 1)
            variant = labels.split('variant="')[1].split('"')[0]
            out[variant] = out.get(variant, 0) + float(value)
    return out


def test_the_stack_splits_names_the_variant_and_counts_it_per_variant(canary):
    seen = Counter()
    for _ in range(400):
        r = invoke(canary)
        assert r.status_code == 200 and r.json() == {"predictions": [3.5]}
        seen[r.headers["x-Amzn-Invoked-Production-Variant"]] += 1
    assert set(seen) == {"champion", "challenger"} and 0.65 < seen["champion"] / 400 < 0.85
    r = invoke(canary, {"X-Amzn-SageMaker-Target-Variant": "challenger"})
    assert r.headers["x-Amzn-Invoked-Production-Variant"] == "challenger"
    assert r.headers["X-Sagestack-Model"] == "hpt_challenger"
    r = invoke(canary, {"X-Amzn-SageMaker-Target-Variant": "nobody"})
    assert r.status_code == 400 and "champion, challenger" in r.json()["error"]
    counts = variant_counts(canary)
    assert counts["champion"] >= seen["champion"] and counts["challenger"] >= seen["challenger"] + 1


def test_set_weights_moves_the_traffic_without_a_restart(canary):
    pid = canary.proc.pid
    cli = [sys.executable, "-m", "server.cli", "variants"]
    env = {"SAGESTACK_RUN_DIR": str(canary.run_dir), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([*cli, "set-weights", "champion=0", "challenger=1"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "challenger" in done.stdout and "100.0%" in done.stdout
    assert {invoke(canary).headers["x-Amzn-Invoked-Production-Variant"] for _ in range(40)} == {"challenger"}
    bad = subprocess.run([*cli, "set-weights", "nobody=1"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "champion, challenger" in bad.stderr
    nan = subprocess.run([*cli, "set-weights", "challenger=nan"], env=env, capture_output=True, text=True)
    assert nan.returncode != 0 and "a number" in nan.stderr
    zero = subprocess.run([*cli, "set-weights", "challenger=0"], env=env, capture_output=True, text=True)
    assert zero.returncode != 0 and "above 0" in zero.stderr
    subprocess.run([*cli, "set-weights", "champion=3", "challenger=1"], env=env, check=True, capture_output=True)
    assert canary.proc.pid == pid and canary.proc.poll() is None


def test_a_request_naming_a_variants_model_gets_that_variant(canary):
    r = invoke(canary, attributes="tfs-model-name=hpt_challenger")
    assert r.headers["x-Amzn-Invoked-Production-Variant"] == "challenger"
    assert canary.routes()["endpoints"]["hpt-canary"]["variants"][0]["name"] == "champion"


def test_without_a_config_every_answer_names_alltraffic(stack):
    r = invoke(stack)
    assert r.status_code == 200 and r.headers["x-Amzn-Invoked-Production-Variant"] == "AllTraffic"


# ---- the shadow ----------------------------------------------------------------------------------------------
SHADOWED = {
    "EndpointConfigName": "hpt-shadowed",
    "ProductionVariants": [{"VariantName": "production", "ModelName": "half_plus_three", "InitialVariantWeight": 1}],
    "ShadowProductionVariants": [{"VariantName": "shadow", "ModelName": "hpt_shadow", "InitialVariantWeight": 1}],
}


@pytest.fixture(scope="module")
def shadowed(hpt_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("shadow")
    shutil.copytree(hpt_base, root / "model" / "half_plus_three")
    shutil.copytree(hpt_base, root / "model" / "hpt_shadow")
    shutil.copytree(Path(__file__).parent / "fixtures" / "shadow_code", root / "model" / "hpt_shadow" / "code")
    (root / "endpoint.json").write_text(json.dumps(SHADOWED))
    stack = start_stack(root / "model", root / "run", SAGESTACK_ENDPOINT_CONFIG=str(root / "endpoint.json"),
                        SAGESTACK_SHADOW_QUEUE_SIZE="2", SAGESTACK_SHADOW_WORKERS="1")  # fmt: skip
    yield stack
    assert stack.stop() == 0


def metric(stack, name: str, **labels: str) -> float:
    total = 0.0
    for line in requests.get(f"{stack.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_slow_or_failing_shadow_leaves_productions_latency_and_status_alone(shadowed, tmp_path):
    def post(x: float) -> requests.Response:
        return requests.post(f"{shadowed.url}/invocations", json={"instances": [x]}, timeout=30)

    took = []
    for x in [1.0, 20.0, 2.0, 3.0, 4.0, 5.0, -1.0, -2.0]:  # the shadow sleeps 2 s on each positive one
        r = post(x)
        took.append(r.elapsed.total_seconds())
        assert r.status_code == 200 and r.json() == {"predictions": [0.5 * x + 3]}
        assert r.headers["x-Amzn-Invoked-Production-Variant"] == "production"
    assert max(took) < 1.5  # production never waits for the shadow's 2 s
    deadline = time.monotonic() + 30
    while metric(shadowed, "sagestack_shadow_invocations_total", outcome="ok") < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    ok = metric(shadowed, "sagestack_shadow_invocations_total", outcome="ok")
    dropped = metric(shadowed, "sagestack_shadow_invocations_total", outcome="dropped")
    errors = metric(shadowed, "sagestack_shadow_invocations_total", outcome="error")
    assert dropped >= 1  # a queue of 2 behind one slow worker: the burst overflows it, and the drops are counted
    assert ok + dropped + errors <= 8 and ok >= 2
    assert metric(shadowed, "sagestack_shadow_latency_seconds_sum") >= 2.0 * ok
    while ok + dropped + errors < 8 and time.monotonic() < deadline:  # the queue drains
        time.sleep(0.5)
        ok, dropped, errors = (metric(shadowed, "sagestack_shadow_invocations_total", outcome=o)
                               for o in ("ok", "dropped", "error"))  # fmt: skip
    assert metric(shadowed, "sagestack_shadow_agreement_count") == ok  # drained: no copy finishes in between
    r = post(-3.0)  # the shadow fails, production does not
    assert r.status_code == 200 and r.elapsed.total_seconds() < 1.5
    while metric(shadowed, "sagestack_shadow_invocations_total", outcome="error") <= errors:
        assert time.monotonic() < deadline, "the shadow's failure was never counted"
        time.sleep(0.2)
    report = tmp_path / "shadow.png"
    done = subprocess.run([sys.executable, "-m", "server.cli", "shadow", "report", "--url", shadowed.url, "--out",
                           str(report)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "hpt-shadowed" in done.stdout and report.stat().st_size > 1000
    (row,) = json.loads(report.with_suffix(".json").read_text())
    assert row["variant"] == "shadow" and row["ok"] == ok and row["dropped"] == dropped
    assert row["shadow_p50_ms"] > 1500 > row["production_p50_ms"]  # the shadow sleeps 2 s, production does not
    assert 0 <= row["agreement"] <= 1


def test_quantiles_from_cumulative_buckets():
    buckets = [(0.1, 0.0), (0.2, 50.0), (0.4, 100.0), (math.inf, 100.0)]
    assert shadow_report.quantile(buckets, 0.5) == pytest.approx(0.2)
    assert shadow_report.quantile(buckets, 0.75) == pytest.approx(0.3)
    assert shadow_report.quantile([(math.inf, 0.0)], 0.5) is None
