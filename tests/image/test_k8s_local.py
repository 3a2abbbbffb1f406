"""Every CPU overlay under `podman kube play`: the model comes from (moto) S3 through the fetch-model
initContainer, /ping turns 200, one real request through the published port, then `podman kube down`."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from bench.payloads import payload
from containers import k8s_local

OVERLAYS = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "k8s" / "overlays").iterdir())


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if not o.endswith("-gpu")])
def test_overlay_serves_under_podman_kube_play(overlay):
    pod = k8s_local.up(overlay)
    try:
        sample = payload(overlay)
        r = requests.post(pod.url + "/invocations", data=sample.body, headers=sample.headers, timeout=120)
        assert r.status_code == 200, r.text[:300]
        assert r.headers["X-Sagestack-Model"] == (f"{overlay}_compiled" if overlay == "yolov4" else overlay)
        assert requests.get(pod.url + "/ping", timeout=5).json()["status"] == "ready"
    finally:
        k8s_local.down(overlay)
