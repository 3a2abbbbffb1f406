"""Every overlay renders with kubectl kustomize and validates strictly against the Kubernetes schemas."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = sorted(p.name for p in (ROOT / "k8s" / "overlays").iterdir())
K8S_VERSION = "1.37.0"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("k8s")
    kubectl = shutil.which("kubectl", path=str(ROOT / ".venv" / "bin")) or shutil.which("kubectl")
    subprocess.run(
        [str(ROOT / "k8s" / "render.sh"), str(out)], check=True, env={"KUBECTL": kubectl, "PATH": "/usr/bin:/bin"}
    )
    return out


def documents(rendered: Path, overlay: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((rendered / f"{overlay}.yaml").read_text()) if d]


def by_kind(docs: list[dict], kind: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_validate_strictly(rendered, overlay):
    docs = documents(rendered, overlay)
    assert {d["kind"] for d in docs} >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
    }
    for doc in docs:
        # Raises on any schema violation, unknown field, or a schema that cannot be found.
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_drain_and_env(rendered, overlay):
    docs = documents(rendered, overlay)
    pod = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ping"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["livenessProbe"]["failureThreshold"] >= 3
    assert container["startupProbe"]["httpGet"]["path"] == "/ping"
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert container["resources"]["requests"] and container["resources"]["limits"]
    config = by_kind(docs, "ConfigMap")
    assert container["envFrom"][0]["configMapRef"]["name"] == config["metadata"]["name"]
    assert config["data"]["SAGEMAKER_TFS_DEFAULT_MODEL_NAME"] == overlay.removesuffix("-gpu")


def test_gpu_overlay_requests_a_gpu(rendered):
    pod = by_kind(documents(rendered, "anomaly-gpu"), "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["containers"][0]["image"].startswith("sagestack-gpu")
    for overlay in OVERLAYS:
        if overlay != "anomaly-gpu":
            limits = by_kind(documents(rendered, overlay), "Deployment")["spec"]["template"]["spec"]["containers"][0]
            assert "nvidia.com/gpu" not in limits["resources"]["limits"]


def test_custom_metric_hpa_option(rendered):
    metrics = by_kind(documents(rendered, "anomaly"), "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Resource", "Pods"]
    assert metrics[1]["pods"]["metric"]["name"] == "sagestack_in_flight_requests"


def test_the_async_backlog_component_scales_on_the_backlog(tmp_path):
    """An overlay of the base with k8s/components/async-backlog-hpa validates, and its HPA reads the backlog."""
    for part in ("base", "components"):
        shutil.copytree(ROOT / "k8s" / part, tmp_path / part)
    (tmp_path / "async").mkdir()
    (tmp_path / "async" / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../base"], "components": ["../components/async-backlog-hpa"],
    }))  # fmt: skip
    kubectl = shutil.which("kubectl", path=str(ROOT / ".venv" / "bin")) or shutil.which("kubectl")
    out = subprocess.run([kubectl, "kustomize", str(tmp_path / "async")], check=True, capture_output=True,
                         text=True).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(out) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    metrics = by_kind(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metrics[-1]["pods"]["metric"]["name"] == "sagestack_async_backlog_size"


def test_missing_schema_fails():
    with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
        kubernetes_validate.validate(
            {"apiVersion": "example.com/v1", "kind": "Nope", "metadata": {"name": "x"}}, K8S_VERSION, strict=True
        )


def test_every_model_family_has_an_overlay_and_gets_its_model_from_the_init_container(rendered):
    assert set(OVERLAYS) >= {"half_plus_three", "credit_risk", "anomaly", "yolov4", "music_transformer"}
    for overlay in OVERLAYS:
        docs = documents(rendered, overlay)
        pod = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        assert init["command"] == ["sagestack", "fetch-model"] and init["image"] == pod["containers"][0]["image"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes["models"]  # filled by the initContainer, not a PVC nobody fills
        assert init["volumeMounts"][0]["mountPath"] == "/opt/ml/model"
        assert by_kind(docs, "ConfigMap")["data"]["SAGESTACK_MODEL_URL"].startswith("s3://")
        assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]


def test_the_transform_job_is_an_indexed_job_with_the_stack_as_its_sidecar(rendered):
    """Each completion index runs `sagestack transform` on its shard against the stack in the same pod."""
    import json

    from transform.job import from_request

    docs = [d for d in yaml.safe_load_all((rendered / "job-transform.yaml").read_text()) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    job = by_kind(docs, "Job")
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == job["spec"]["parallelism"]
    pod = job["spec"]["template"]["spec"]
    fetch, sidecar = pod["initContainers"]
    assert fetch["command"] == ["sagestack", "fetch-model"]
    assert sidecar["restartPolicy"] == "Always" and sidecar["startupProbe"]["httpGet"]["path"] == "/ping"
    (main,) = pod["containers"]
    argv = main["command"]
    assert argv[:2] == ["sagestack", "transform"] and argv[argv.index("--url") + 1] == "http://127.0.0.1:8080"
    assert argv[argv.index("--shard-index") + 1] == "$(JOB_COMPLETION_INDEX)"
    assert int(argv[argv.index("--shard-count") + 1]) == job["spec"]["completions"]  # every object in one shard
    env = {c["metadata"]["name"].split("-sagestack-env")[0]: c for c in docs if c["kind"] == "ConfigMap"}
    assert env["credit-risk"]["data"]["SAGEMAKER_BATCH"] == "true"
    request = json.loads(
        next(c for c in docs if c["kind"] == "ConfigMap" and "job.json" in c["data"])["data"]["job.json"]
    )
    assert from_request(request).model == "credit_risk"  # the job the pod runs is a valid CreateTransformJob request
