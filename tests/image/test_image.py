"""Every model family through the image: one real request each, /metrics, then SIGTERM to exit 0."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import requests
from image_helpers import MODEL_DIR, PROBE, as_json, invoke

from bench.payloads import payload
from containers.podman import podman


def test_ping_reports_every_model(container):
    r = requests.get(container.url + "/ping", timeout=5)
    assert r.status_code == 200 and "7 model(s) AVAILABLE" in r.json()["detail"], r.text


def test_half_plus_three(container):
    assert as_json(invoke(container, "half_plus_three", b'{"instances": [1.0, 2.0]}', "application/json")) == {
        "predictions": [3.5, 4.0]
    }


def test_credit_risk_json_and_csv(container):
    sample = payload("credit_risk")  # 5 real applications, CSV with a header
    csv_answer = as_json(invoke(container, "credit_risk", sample.body, "text/csv"))["predictions"]
    assert len(csv_answer) == 5 and all(p["label"] in ("low risk", "high risk") for p in csv_answer)
    lines = sample.body.decode().splitlines()
    header = lines[0].split(",")
    records = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    for record in records:
        for key, value in record.items():
            if value.lstrip("-").isdigit():
                record[key] = int(value)
    json_answer = as_json(
        invoke(container, "credit_risk", json.dumps({"instances": records}).encode(), "application/json")
    )
    got = [p["probability_high_risk"] for p in json_answer["predictions"]]
    assert got == pytest.approx([p["probability_high_risk"] for p in csv_answer], abs=1e-6)


def test_anomaly_png(container):
    answer = as_json(invoke(container, "anomaly", payload("anomaly").body, "image/png"))
    assert answer.keys() >= {"IsAnomalous", "Confidence", "AnomalyScore", "Threshold", "AnomalyMask", "BoundingBox"}


def test_yolov4_compiled_and_uncompiled(container):
    photo = payload("yolov4").body
    answers = {}
    for compiled in ("true", "false"):
        r = invoke(container, "yolov4", photo, "image/jpeg", attrs=f"compiled={compiled}")
        answers[compiled] = as_json(r)
        assert r.headers["X-Sagestack-Model"] == ("yolov4_compiled" if compiled == "true" else "yolov4")
    assert len(answers["false"]) > 0  # random weights propose many boxes; 100 is the cap
    meta = json.loads((MODEL_DIR / "yolov4_compiled" / "1" / "compiled" / "metadata.json").read_text())
    if meta["precision"] != "fp32":  # `make models` picked BF16 or INT8 for passing the agreement bar: hold it to that
        from models.yolov4.boxes import agreement
        from models.yolov4.evaluation import AGREEMENT_BAR, IOU_MATCH

        assert agreement(answers["false"], answers["true"], IOU_MATCH)["f1"] >= AGREEMENT_BAR, meta["precision"]
        return
    assert len(answers["true"]) == len(answers["false"])
    for a, b in zip(answers["true"], answers["false"], strict=True):
        assert a["class_id"] == b["class_id"] and a["box"] == pytest.approx(b["box"], abs=0.5)


def test_music_transformer_midi(container):
    import mido

    sample = payload("music_transformer")
    r = invoke(container, "music_transformer", sample.body, "audio/midi", accept="audio/midi",
               attrs="extension_duration=2,seed=3")  # fmt: skip
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"] == "audio/midi"
    midi = mido.MidiFile(file=io.BytesIO(r.content))
    assert midi.length > mido.MidiFile(file=io.BytesIO(sample.body)).length


def test_requirements_txt_installs_a_package(container):
    answer = as_json(invoke(container, PROBE, b'{"instances": [1.0]}', "application/json"))
    assert answer == {"predictions": [3.5], "probe": 42}


def test_a_client_error_is_a_json_4xx(container):
    r = invoke(container, "anomaly", b"not an image", "image/png")
    assert 400 <= r.status_code < 500 and "error" in r.json()


def test_metrics(container):
    text = requests.get(container.url + "/metrics", timeout=10).text
    assert 'sagestack_model_ready{model="yolov4_compiled"} 1.0' in text
    assert "sagestack_requests_total{" in text and 'model="music_transformer"' in text


def test_the_shipped_transform_runs_a_job_against_the_container(container):
    """`sagestack transform` from inside the image (what the Kubernetes transform Job's main container runs)."""
    from models.credit_risk.data import load

    rows = load().drop(columns=["risk"]).head(300).to_csv(index=False, header=False)
    podman("exec", "-i", container.name, "sh", "-c", "mkdir -p /tmp/t/in && cat > /tmp/t/in/apps.csv", input=rows)
    port = container.url.rsplit(":", 1)[1]
    done = podman("exec", container.name, "sagestack", "transform", "--url", f"http://127.0.0.1:{port}",
                  "--model", "credit_risk", "--input", "/tmp/t/in", "--output", "/tmp/t/out", "--content-type",
                  "text/csv", "--split-type", "Line", "--accept", "text/csv", "--assemble-with", "Line")  # fmt: skip
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["records"] == 300 and summary["failed"] == 0, done.stderr[-2000:]
    out = podman("exec", container.name, "cat", "/tmp/t/out/apps.csv.out").stdout.splitlines()
    assert len(out) == 300 and all(line.split(",")[-1] in ("low risk", "high risk") for line in out)


def runtime_client(container):
    import boto3

    return boto3.client("sagemaker-runtime", endpoint_url=container.url, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip


def test_async_inference_runs_in_the_image(container):
    """boto3's invoke_endpoint_async: the input and the output on the container's disk (file://)."""
    podman("exec", "-i", container.name, "sh", "-c", "mkdir -p /tmp/async/in && cat > /tmp/async/in/x.json",
           input='{"instances": [1.0, 2.0]}')  # fmt: skip
    r = runtime_client(container).invoke_endpoint_async(
        EndpointName="image", InputLocation="file:///tmp/async/in/x.json", ContentType="application/json",
        InferenceId="in-image",
    )  # fmt: skip
    assert r["OutputLocation"] == "file:///tmp/async/out/in-image.out"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = podman("exec", container.name, "cat", "/tmp/async/out/in-image.out", check=False)
        if out.returncode == 0:
            assert json.loads(out.stdout) == {"predictions": [3.5, 4.0]}
            return
        time.sleep(0.2)
    pytest.fail("the async output was not written within 60 s")


def test_music_streams_notes_through_the_image(container):
    sample = payload("music_transformer")
    r = runtime_client(container).invoke_endpoint_with_response_stream(
        EndpointName="image", Body=sample.body, ContentType="audio/midi", Accept="application/jsonlines",
        CustomAttributes="tfs-model-name=music_transformer,extension_duration=2,seed=3",
    )  # fmt: skip
    lines = [json.loads(line) for line in b"".join(e["PayloadPart"]["Bytes"] for e in r["Body"]).splitlines()]
    assert len(lines) > 1 and all("note" in line for line in lines[:-1]) and "midi" in lines[-1]


def test_the_endpoint_config_names_the_variant_shadows_and_captures_in_the_image(container):
    headers = {"Content-Type": "application/json", "X-Amzn-SageMaker-Inference-Id": "image-1"}
    r = requests.post(container.url + "/invocations", data=b'{"instances": [7.0]}', headers=headers, timeout=30)
    assert r.json() == {"predictions": [6.5]} and r.headers["x-Amzn-Invoked-Production-Variant"] == "AllTraffic"
    deadline = time.monotonic() + 30
    while True:
        read = podman("exec", container.name, "sagestack", "capture", "read", "/tmp/capture", check=False)
        metrics = requests.get(container.url + "/metrics", timeout=10).text
        shadowed = 'outcome="ok"' in metrics and "sagestack_shadow_invocations_total{" in metrics
        if read.returncode == 0 and '{"instances":[7.0]}' in read.stdout and shadowed:
            return
        assert time.monotonic() < deadline, (read.stderr[-500:], shadowed)
        time.sleep(0.5)


def _json_tensor(value: np.ndarray) -> str:
    """float32 as nested JSON lists in float32's shortest repr, so a 3x416x416 image stays under the 6 MB limit."""
    distinct, index = np.unique(value, return_inverse=True)
    text = [np.format_float_positional(v, unique=True, trim="0") for v in distinct]
    assert np.array_equal(np.array([float(t) for t in text], dtype=np.float32), distinct)  # each parses back exactly
    cells = np.array(text, dtype=object)[index.reshape(value.shape)]

    def nest(a: np.ndarray) -> str:
        return "[" + ",".join(a if a.ndim == 1 else map(nest, a)) + "]"

    return nest(cells)


def _three_protocols(container, model: str, inputs: dict[str, np.ndarray], names: list[str]) -> list[dict]:
    """The same float32 tensors through OIP v2 REST (binary tensors), OIP v2 gRPC and TF Serving's :predict
    (columnar); each protocol's outputs `names` as arrays."""
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    answers = []
    for module, url, binary in ((triton_http, container.url.removeprefix("http://"), {"binary_data": True}),
                                (triton_grpc, container.grpc, {})):  # fmt: skip
        client = module.InferenceServerClient(url, network_timeout=120) if binary else module.InferenceServerClient(url)
        given = []
        for name, value in inputs.items():
            given.append(module.InferInput(name, list(value.shape), "FP32"))
            given[-1].set_data_from_numpy(value, **binary)
        result = client.infer(model, given, outputs=[module.InferRequestedOutput(n, **binary) for n in names])
        answers.append({n: result.as_numpy(n) for n in names})
        client.close()
    body = '{"inputs": {' + ",".join(f'"{n}": {_json_tensor(v)}' for n, v in inputs.items()) + "}}"
    r = requests.post(f"{container.url}/v1/models/{model}:predict", data=body.encode(),
                      headers={"Content-Type": "application/json"}, timeout=120)  # fmt: skip
    outputs = as_json(r)["outputs"]
    outputs = outputs if isinstance(outputs, dict) else {names[0]: outputs}  # TF Serving unwraps a single output
    answers.append({n: np.asarray(outputs[n], dtype=np.float32) for n in names})
    return answers


def test_v2_rest_v2_grpc_and_tf_serving_rest_predict_what_invocations_predicts(container):
    x = np.array([1.0, 2.0, 5.0], dtype=np.float32)
    for answer in _three_protocols(container, "half_plus_three", {"x": x}, ["y"]):
        assert answer["y"].tolist() == [3.5, 4.0, 5.5]

    from models.anomaly.preprocess import to_input
    from server.handler_kit import decode_image

    png = payload("anomaly").body
    versions = json.loads((MODEL_DIR / "anomaly" / "code" / "config.json").read_text())["versions"]
    cfg = versions[max(versions, key=int)]  # the latest version, which a request without one gets
    image = to_input(decode_image(png), cfg["roi"], cfg["image_size"])[None]
    expected = as_json(invoke(container, "anomaly", png, "image/png"))["AnomalyScore"]
    for answer in _three_protocols(container, "anomaly", {"images": image}, ["score", "anomaly_map"]):
        assert round(float(answer["score"][0]), 4) == pytest.approx(expected, abs=1e-4)
        assert answer["anomaly_map"].shape[0] == 1

    from models.yolov4.boxes import SERVED_DEFAULTS, detections, letterbox
    from models.yolov4.coco import CLASSES

    jpeg = payload("yolov4").body
    yolo = json.loads((MODEL_DIR / "yolov4_compiled" / "code" / "config.json").read_text())
    size, names = yolo["input_size"], tuple(yolo.get("names") or CLASSES)
    tensor, frame = letterbox(decode_image(jpeg, fit=size), size)
    expected = as_json(invoke(container, "yolov4", jpeg, "image/jpeg", attrs="compiled=true"))
    for answer in _three_protocols(container, "yolov4_compiled", {"input0": tensor[None]}, ["output0"]):
        out = answer["output0"][0]
        found = detections(out[:, :4], out[:, 4], out[:, 5].astype(np.int64), frame, names, **SERVED_DEFAULTS)
        assert [d["class_id"] for d in found] == [d["class_id"] for d in expected]
        for a, b in zip(found, expected, strict=True):
            assert a["box"] == pytest.approx(b["box"], abs=0.02) and a["score"] == pytest.approx(b["score"], abs=1e-3)


def test_models_whose_handlers_take_other_inputs_say_what_their_signatures_take_over_v2(container):
    """music_transformer's tokens and parameters (BYTES among them) and credit_risk's prepared features, from the
    gRPC metadata; then a melody extended over gRPC with the tensors the metadata names."""
    import tritonclient.grpc as triton_grpc

    from models.music_transformer.params import Params, as_tensors
    from models.music_transformer.tokens import Note, encode

    client = triton_grpc.InferenceServerClient(container.grpc)
    credit = client.get_model_metadata("credit_risk", as_json=True)
    assert [(t["name"], t["datatype"]) for t in credit["inputs"]] == [("features", "FP32")]
    music = client.get_model_metadata("music_transformer", as_json=True)
    kinds = {t["name"]: t["datatype"] for t in music["inputs"]}
    assert kinds["tokens"] == "INT32" and kinds["sampling"] == "BYTES" and kinds["seed"] == "INT32"
    notes = [Note(i * 0.25, i * 0.25 + 0.2, pitch, 80) for i, pitch in enumerate((60, 62, 64, 65, 67, 69, 71, 72))]
    tokens = np.asarray([encode(notes)], dtype=np.int32)
    tensors = {"tokens": tokens, **as_tensors(Params(extension_duration=2.0, seed=3))}
    assert set(tensors) == set(kinds)
    given = []
    for name, value in tensors.items():
        given.append(triton_grpc.InferInput(name, list(value.shape), kinds[name]))
        given[-1].set_data_from_numpy(value)
    out, again = (client.infer("music_transformer", given, client_timeout=120).as_numpy("tokens") for _ in range(2))
    assert out.shape[0] == 1 and out.shape[1] > 0 and (out == again).all()  # the extension, the same for one seed
    client.close()


def test_the_console_and_the_models_samples_are_served_from_the_image(container):
    page = requests.get(container.url + "/console/", timeout=10)
    assert page.status_code == 200 and "sagestack console" in page.text
    script = requests.get(container.url + "/console/console.js", timeout=10)
    assert script.status_code == 200 and script.headers["Content-Type"] == "text/javascript"
    listed = requests.get(container.url + "/samples/yolov4_compiled", timeout=10).json()["samples"]
    assert {"name": "china.jpg", "content_type": "image/jpeg"}.items() <= listed[0].items()
    photo = requests.get(container.url + "/samples/yolov4_compiled/china.jpg", timeout=10).content
    assert isinstance(as_json(invoke(container, "yolov4", photo, "image/jpeg")), list)  # a request it takes


def test_user_and_sigterm_drains_to_exit_0(container):
    user = podman("exec", container.name, "id", "-un").stdout.strip()
    assert user == container.user
    started = time.monotonic()
    podman("kill", "--signal", "TERM", container.name)
    code = podman("wait", container.name, timeout=40).stdout.strip()
    assert code == "0" and time.monotonic() - started < 30
