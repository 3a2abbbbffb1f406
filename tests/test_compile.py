"""`sagestack compile`: targets, the ONNX Runtime backend with its parity check, and compiled vs uncompiled served."""

from __future__ import annotations

import importlib.util
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
import requests
import torch

from bench.stack import start_stack
from compiler.artifact import load_traced
from compiler.backend import backend_module
from compiler.job import compile_model, parity
from compiler.targets import resolve
from models.yolov4.boxes import agreement
from models.yolov4.build import export
from models.yolov4.network import build

PHOTO = Path(importlib.util.find_spec("sklearn").origin).parent / "datasets" / "images" / "china.jpg"
SIZE = 96


def test_targets():
    assert resolve("ml_c5").arch == "skylake-avx512" and resolve("ml.c6i").arch == "icelake-server"
    assert resolve("ml_g4dn").device == "cuda" and resolve("ml_g4dn").arch == "sm_75"
    here = resolve("this_machine")
    assert here.device == "cpu" and here.cores and here.arch
    with pytest.raises(ValueError, match="unknown target 'ml_x9'"):
        resolve("ml_x9")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("compile") / "model"
    export(root / "yolov4", build(width=0.125, size=SIZE, seed=5), SIZE)
    meta = compile_model(
        root / "yolov4" / "1" / "model.tar.gz", "pytorch", {"input0": [1, 3, SIZE, SIZE]}, "this_machine",
        root / "yolov4_compiled", runs=2, keep_candidates=True,
    )  # fmt: skip
    return root, meta


def test_compiled_artifact_and_metadata(models):
    root, meta = models
    on_disk = json.loads((root / "yolov4_compiled" / "1" / "compiled" / "metadata.json").read_text())
    assert on_disk == meta
    assert meta["runtime"] in ("onnxruntime", "tvm", "openvino")
    assert (root / "yolov4_compiled" / "1" / "compiled" / meta["artifact"]).exists()
    assert {c["backend"].split("-")[0] for c in meta["candidates"]} == {"tvm", "onnxruntime", "openvino"}
    assert all("error" not in c for c in meta["candidates"]), meta["candidates"]
    assert meta["parity"]["max_rel"] <= 1e-3
    assert meta["reference_latency_ms"] > 0 and meta["latency_ms"] > 0 and meta["speedup"] > 0
    assert meta["inputs"] == {"input0": [1, 3, SIZE, SIZE]} and meta["target"]["device"] == "cpu"
    assert (root / "yolov4_compiled" / "code" / "inference.py").exists()  # the handlers come along


def test_precision_is_a_compile_option_openvino_runs_in_bf16_where_the_cpu_has_it(models, tmp_path):
    from compiler import openvino_backend
    from compiler.job import precision_plan

    with pytest.raises(ValueError, match="none of onnxruntime builds bf16"):
        precision_plan(("onnxruntime",), "bf16")
    with pytest.raises(ValueError, match="choose from fp32, bf16, int8"):
        precision_plan(("openvino",), "fp16")
    root, _ = models
    meta = compile_model(root / "yolov4" / "1" / "model.tar.gz", "pytorch", {"input0": [1, 3, SIZE, SIZE]},
                         "this_machine", tmp_path / "bf16", runs=2, backends=("openvino", "onnxruntime"),
                         precision="bf16")  # fmt: skip
    native = openvino_backend.supports("bf16")
    assert [c["backend"] for c in meta["candidates"]] == ["openvino"]  # onnxruntime builds fp32 only
    assert meta["precision"] == ("bf16" if native else "fp32") and meta["parity"]["max_rel"] < 0.5
    kept = {p.name for p in (tmp_path / "bf16" / "1" / "compiled").iterdir()}
    assert kept == {"metadata.json", "model.xml", "model.bin"}  # only the picked artifact, as Neo's output
    runner = openvino_backend.Runner(tmp_path / "bf16" / "1" / "compiled" / meta["artifact"], 0, meta["precision"])
    hint = str(runner.compiled.get_property("INFERENCE_PRECISION_HINT"))
    assert ("bfloat16" if native else "f32") in hint


def test_precision_plan_takes_several_precisions_and_builds_each_once():
    from compiler import openvino_backend
    from compiler.job import precision_plan

    bf16 = "bf16" if openvino_backend.supports("bf16") else "fp32"
    plan = precision_plan(("openvino", "onnxruntime", "tvm"), "fp32,bf16,int8")
    assert plan[:3] == [("openvino", "fp32"), ("onnxruntime", "fp32"), ("tvm", "fp32")]
    assert plan[3:] == ([("openvino", "bf16")] if bf16 == "bf16" else []) + [
        ("openvino", "int8"),
        ("onnxruntime", "int8"),
    ]
    with pytest.raises(ValueError, match="none of tvm builds int8"):
        precision_plan(("tvm",), "fp32,int8")


def test_a_reduced_precision_is_picked_only_past_its_evaluation_bar():
    from compiler.job import gate_passed

    fp32 = {"precision": "fp32", "parity": {"max_rel": 5e-4}}
    int8 = {"precision": "int8", "parity": {"max_rel": 0.3}}
    assert gate_passed(fp32) and not gate_passed({**fp32, "parity": {"max_rel": 2e-3}})
    assert not gate_passed(int8) and gate_passed(int8, fp32_asked=False)  # alone, it is what was asked for
    assert gate_passed({**int8, "agreement": {"passes": True}}) and not gate_passed(
        {**int8, "agreement": {"passes": False}}
    )


def test_int8_is_calibrated_on_photos_and_judged_by_its_detections(models, tmp_path):
    """Both backends build the one QDQ quantization; each candidate carries its detection agreement with FP32."""
    from compiler.evaluation import calibration_set, packaged_photos, resize_input

    root, _ = models
    meta = compile_model(root / "yolov4" / "1" / "model.tar.gz", "pytorch", {"input0": [1, 3, SIZE, SIZE]},
                         "this_machine", tmp_path / "int8", runs=2, backends=("openvino", "onnxruntime"),
                         precision="fp32,int8", evaluate="detections", keep_candidates=True)  # fmt: skip
    built = {(c["backend"], c["precision"]): c for c in meta["candidates"]}
    assert set(built) == {("openvino", "fp32"), ("onnxruntime", "fp32"), ("openvino", "int8"), ("onnxruntime", "int8")}
    assert all("error" not in c for c in built.values()), meta["candidates"]
    assert meta["calibration"] == {"inputs": 12, "source": "packaged photos"}
    for (backend, precision), c in built.items():
        images = c["agreement"]["images"]
        assert set(images) == {p.name for p in packaged_photos()}
        assert sum(i["detections_reference"] for i in images.values()) > 0  # the photos give detections to judge
        if precision == "fp32":
            assert c["agreement"]["f1"] >= 0.95, (backend, c["agreement"])
        else:
            assert c["artifact"].startswith("model.int8")
    graph = onnx.load(tmp_path / "int8" / "1" / "compiled" / "model.int8.onnx").graph
    quantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(n.input[0] in quantized and n.input[1] in quantized for n in convs)  # int8 in, int8 weights
    assert graph.output[0].name not in quantized  # the rows (pixels and scores) stay float
    assert meta["precision"] == "fp32" or meta["agreement"]["passes"]
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, path in enumerate(packaged_photos()[:2]):
        (photos / f"{i}.jpg").write_bytes(path.read_bytes())
    assert calibration_set(resize_input([1, 3, 32, 48]), photos).shape == (2, 3, 32, 48)
    with pytest.raises(ValueError, match=r"no \.jpg/\.jpeg/\.png/\.bmp images"):
        calibration_set(resize_input([1, 3, 32, 48]), tmp_path)


def test_the_winner_reproduces_the_uncompiled_model_on_a_new_input(models):
    """Not the job's own parity numbers: the artifact, reloaded by its backend, against TorchScript."""
    root, meta = models
    x = np.random.default_rng(11).random((1, 3, SIZE, SIZE), dtype=np.float32)
    with torch.inference_mode():
        want = load_traced(root / "yolov4" / "1" / "model.tar.gz")(torch.from_numpy(x)).numpy()
    runner = backend_module(meta["runtime"]).Runner(root / "yolov4_compiled" / "1" / "compiled" / meta["artifact"])
    got = runner(x)[0]
    assert got.shape == want.shape
    assert parity(got, want)["max_rel"] <= 1e-3
    assert parity(got + 0.01 * np.abs(want).max(), want)["max_rel"] > 1e-3  # the check does catch a drift


def test_every_backends_runner_takes_concurrent_calls(models):
    """The runtime calls a Runner from its gRPC threads at once; each answer must be the one a lone call gets."""
    root, meta = models
    compiled = root / "yolov4_compiled" / "1" / "compiled"
    inputs = [np.random.default_rng(i).random((1, 3, SIZE, SIZE), dtype=np.float32) for i in range(8)]
    for candidate in meta["candidates"]:
        runner = backend_module(candidate["runtime"]).Runner(compiled / candidate["artifact"])
        alone = [runner(x)[0] for x in inputs]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda x, run=runner: run(x)[0], inputs * 3))
        for got, want in zip(together, alone * 3, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=candidate["runtime"])


def test_parity_numbers():
    want = np.array([[1.0, -4.0], [2.0, 0.5]])
    got = want + np.array([[0.0, 0.2], [-0.1, 0.0]])
    assert parity(got, want) == pytest.approx({"max_abs": 0.2, "max_rel": 0.05})


def test_bad_jobs_are_refused(models):
    root, _ = models
    tar = root / "yolov4" / "1" / "model.tar.gz"
    with pytest.raises(ValueError, match="only pytorch"):
        compile_model(tar, "mxnet", {"input0": [1, 3, SIZE, SIZE]}, "ml_c5", root / "x")
    with pytest.raises(ValueError, match="cuda target"):
        compile_model(tar, "pytorch", {"input0": [1, 3, SIZE, SIZE]}, "ml_g4dn", root / "x")


@pytest.mark.stack
def test_one_endpoint_serves_both_variants(models, tmp_path):
    root, _ = models
    answers = {}
    for default in ("true", "false"):
        stack = start_stack(root, tmp_path / default, COMPILEDMODEL=default)
        try:
            for compiled in (None, "true", "false"):
                attrs = "tfs-model-name=yolov4,conf_threshold=0.2" + (f",compiled={compiled}" if compiled else "")
                headers = {"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": attrs}
                r = requests.post(stack.url + "/invocations", data=PHOTO.read_bytes(), headers=headers, timeout=60)
                assert r.status_code == 200, r.text
                served = r.headers["X-Sagestack-Model"]
                assert served == ("yolov4_compiled" if (compiled or default) == "true" else "yolov4")
                answers[served] = r.json()
            bad = {"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": "compiled=maybe"}
            r = requests.post(stack.url + "/invocations", data=PHOTO.read_bytes(), headers=bad, timeout=60)
            assert r.status_code == 400 and "compiled" in r.json()["error"]
        finally:
            assert stack.stop() == 0
    plain, compiled = answers["yolov4"], answers["yolov4_compiled"]
    assert len(plain) == len(compiled) > 0
    # Matched by class and overlap, not position: tied scores may be ordered differently by another backend.
    assert agreement(plain, compiled, iou_threshold=0.9) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert sorted(d["score"] for d in plain) == pytest.approx(sorted(d["score"] for d in compiled), abs=1e-3)
