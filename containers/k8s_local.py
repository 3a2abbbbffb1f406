"""`make k8s-local OVERLAY=x`: one overlay's rendered manifests under `podman kube play`, until /ping is 200.

The Deployment and its ConfigMap run as rendered (initContainer, env, probes, volumes), with what a laptop
has in place of a cluster, each change printed:
- S3 is a moto server on 127.0.0.1, holding the endpoint's model.tar.gz packed from build/model (the same
  archive `sagestack push` uploads), so the fetch-model initContainer does what it does on a cluster;
- the pod shares the host's network, so the "published port" is nginx's own (SAGEMAKER_BIND_TO_PORT, which
  the probes then name by number) and no Service is played (podman plays Pods, Deployments and volumes only);
- one replica, restartPolicy OnFailure (podman 4.3 would restart the finished initContainer under Always).
`python -m containers.k8s_local down OVERLAY` (`make k8s-local-down`) stops it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import requests
import yaml

from bench.stack import ROOT, free_port, free_port_range
from containers.podman import podman, wait_for_ping
from containers.sagemaker_sync import endpoint_models
from server.model_archive import pack

BUCKET = "sagestack-models"
LOCAL_DIR = ROOT / "build" / "k8s" / "local"


@dataclass
class LocalPod:
    overlay: str
    url: str
    pod: str  # podman's name for the Deployment's pod


def log(message: str) -> None:
    print(f"[k8s-local] {message}", file=sys.stderr, flush=True)


def render(overlay: str) -> list[dict]:
    out = ROOT / "build" / "k8s"
    kubectl = os.environ.get("KUBECTL", str(ROOT / ".venv" / "bin" / "kubectl"))
    subprocess.run([str(ROOT / "k8s" / "render.sh"), str(out)], check=True, env={**os.environ, "KUBECTL": kubectl},
                   stdout=subprocess.DEVNULL)  # fmt: skip
    path = out / f"{overlay}.yaml"
    if not path.is_file():
        raise SystemExit(f"k8s-local: no overlay {overlay!r} (have: {sorted(p.stem for p in out.glob('*.yaml'))})")
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(url + "/moto-api/", timeout=1)
            return proc, url
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the moto server on {url} did not answer within 30 s")


def upload(s3_url: str, model_dir: Path, model: str) -> str:
    """The endpoint's model.tar.gz (the model and its compiled twin) into the moto bucket; its s3:// URL."""
    s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", aws_access_key_id="local",
                      aws_secret_access_key="local")  # fmt: skip
    s3.create_bucket(Bucket=BUCKET)
    models = endpoint_models(model_dir, model)
    key = f"{model}/model.tar.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=pack(model_dir, models))
    log(f"uploaded {' + '.join(models)} to s3://{BUCKET}/{key} (moto at {s3_url})")
    return f"s3://{BUCKET}/{key}"


def local_manifest(docs: list[dict], port: int, env: dict[str, str]) -> list[dict]:
    """The Deployment and ConfigMap with the laptop's changes (see the module docstring)."""
    kept = [d for d in docs if d["kind"] in ("Deployment", "ConfigMap")]
    for doc in kept:
        if doc["kind"] == "ConfigMap":
            doc["data"].update(env)
        else:
            doc["spec"]["replicas"] = 1
            pod = doc["spec"]["template"]["spec"]
            pod["hostNetwork"] = True
            pod["restartPolicy"] = "OnFailure"  # podman 4.3 restarts an init container that exited 0 under Always
            container = pod["containers"][0]
            del container["ports"]  # podman maps no ports on the host network; the probes name the port itself
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                check = container.get(probe, {}).get("httpGet") or container.get(probe, {}).get("tcpSocket")
                if check:
                    check["port"] = port
    return kept


def up(overlay: str, model_dir: Path = ROOT / "build" / "model", port: int | None = None) -> LocalPod:
    docs = render(overlay)
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    model = config["data"]["SAGEMAKER_TFS_DEFAULT_MODEL_NAME"]
    port = port or free_port()
    moto, s3_url = start_moto()
    try:
        env = {
            "SAGESTACK_MODEL_URL": upload(s3_url, model_dir, model),
            "AWS_ENDPOINT_URL": s3_url,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "us-east-1",
            "SAGEMAKER_BIND_TO_PORT": str(port),
            "SAGESTACK_BIND_ADDRESS": "127.0.0.1",
            "SAGEMAKER_SAFE_PORT_RANGE": free_port_range(40),
        }
        log(f"{overlay}: Deployment + ConfigMap, 1 replica, host network, ConfigMap += {sorted(env)}")
        LOCAL_DIR.mkdir(parents=True, exist_ok=True)
        manifest = LOCAL_DIR / f"{overlay}.yaml"
        manifest.write_text(yaml.safe_dump_all(local_manifest(docs, port, env), sort_keys=False))
        podman("kube", "down", str(manifest), check=False)
        played = podman("kube", "play", "--network", "host", str(manifest), check=False)
        if played.returncode != 0:
            raise SystemExit(f"k8s-local: podman kube play failed: {played.stderr.strip()[-2000:]}")
        deployment = next(d for d in docs if d["kind"] == "Deployment")["metadata"]["name"]
        pod = LocalPod(overlay, f"http://127.0.0.1:{port}", f"{deployment}-pod-0")
        wait_ready(pod)
    finally:
        moto.terminate()  # the initContainer has fetched the model, or failed
        moto.wait(10)
    log(f"{overlay}: /ping 200 at {pod.url}; stop it with `make k8s-local-down OVERLAY={overlay}`")
    return pod


def wait_ready(pod: LocalPod) -> None:
    try:
        wait_for_ping(pod.url)
    except TimeoutError as exc:
        logs = podman("pod", "logs", "--tail", "40", pod.pod, check=False)
        down(pod.overlay)
        raise SystemExit(f"k8s-local: {pod.overlay}: {exc}\n{logs.stdout}{logs.stderr}") from None


def down(overlay: str) -> None:
    manifest = LOCAL_DIR / f"{overlay}.yaml"
    if manifest.is_file():
        podman("kube", "down", str(manifest), check=False)
        log(f"{overlay}: podman kube down")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m containers.k8s_local", description=__doc__.split("\n")[0])
    p.add_argument("action", choices=("up", "down"))
    p.add_argument("overlay")
    p.add_argument("--port", type=int, default=int(os.environ.get("K8S_PORT", "0")) or None)
    args = p.parse_args(argv)
    if args.action == "up":
        up(args.overlay, port=args.port)
    else:
        down(args.overlay)


if __name__ == "__main__":
    main()
