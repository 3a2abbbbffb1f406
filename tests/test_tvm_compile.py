"""TVM (Relax) end to end on a small CNN: compile, parity, save, reload in a fresh process, serve."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from torch import nn

from bench.stack import start_stack
from compiler.artifact import pack_model_tar
from compiler.job import Tuning, compile_model

ROOT = Path(__file__).resolve().parents[1]
SHAPE = [1, 3, 32, 32]


class SmallCNN(nn.Module):
    """Convolution, batch norm and Mish (as in YOLOv4's backbone), pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Mish(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.Mish(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("tvm")
    torch.manual_seed(0)
    model = SmallCNN().eval()
    with torch.no_grad():
        for m in model.modules():  # non-trivial batch-norm statistics, so folding them is tested
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        traced = torch.jit.trace(model, torch.rand(*SHAPE))
    source = root / "model" / "cnn" / "1"
    (source / "compiled").mkdir(parents=True)
    tar = pack_model_tar(traced, source / "model.tar.gz")
    meta = {"runtime": "torchscript", "artifact": "model.tar.gz", "inputs": {"input0": SHAPE}, "outputs": ["output0"]}
    (source / "compiled" / "metadata.json").write_text(json.dumps(meta))
    out = root / "model" / "cnn_tvm"
    meta = compile_model(tar, "pytorch", {"input0": SHAPE}, "this_machine", out, runs=2, backends=("tvm",),
                         tuning_key="test-small-cnn")  # fmt: skip
    return root, model, meta


def test_tvm_compiles_with_parity(compiled):
    root, _, meta = compiled
    assert meta["runtime"] == "tvm" and meta["backend"] == "tvm-untuned"
    assert meta["parity"]["max_rel"] <= 1e-3
    assert (root / "model" / "cnn_tvm" / "1" / "compiled" / "model.so").stat().st_size > 0


def test_library_reloads_in_a_fresh_process(compiled, tmp_path):
    root, model, _ = compiled
    x = np.random.default_rng(3).random(SHAPE, dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    library = root / "model" / "cnn_tvm" / "1" / "compiled" / "model.so"
    code = (
        "import sys, numpy as np\n"
        "from compiler.tvm_backend import Runner\n"
        "out = Runner(sys.argv[1])(np.load(sys.argv[2]))[0]\n"
        "np.save(sys.argv[3], out)\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(library), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-4, atol=1e-4)


@pytest.mark.stack
def test_tvm_runtime_serves_beside_torchscript(compiled, tmp_path):
    root, model, _ = compiled
    x = np.random.default_rng(4).random(SHAPE, dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    stack = start_stack(root / "model", tmp_path)
    try:
        for name in ("cnn", "cnn_tvm"):
            r = requests.post(
                stack.url + "/invocations",
                json={"instances": x.tolist()},
                headers={"X-Amzn-SageMaker-Custom-Attributes": f"tfs-model-name={name}"},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(np.asarray(r.json()["predictions"]), want, rtol=1e-4, atol=1e-4)
    finally:
        assert stack.stop() == 0


@pytest.mark.timeout(900)  # ~100 s on an idle 2-vCPU machine: real builder and runner processes
def test_metaschedule_tuning_fills_a_database_that_later_compiles_reuse(tmp_path):
    """Two real MetaSchedule trials (builder and runner processes, XGBoost cost model), then a plain compile."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval()
    with torch.no_grad():
        tar = pack_model_tar(torch.jit.trace(model, torch.rand(1, 3, 16, 16)), tmp_path / "model.tar.gz")
    shape = {"input0": [1, 3, 16, 16]}
    tuning = Tuning(trials=2, trials_per_task=2, root=tmp_path / "tuning")
    tuned = compile_model(tar, "pytorch", shape, "this_machine", tmp_path / "a", runs=2, backends=("tvm",),
                          tuning=tuning, tuning_key="tiny")  # fmt: skip
    assert tuned["backend"] == "tvm-metaschedule" and tuned["parity"]["max_rel"] <= 1e-3
    database = Path(tuned["candidates"][0]["tuning_database"])
    assert database.is_relative_to(tmp_path / "tuning")
    assert (database / "database_tuning_record.json").read_text().strip()
    again = compile_model(tar, "pytorch", shape, "this_machine", tmp_path / "b", runs=2, backends=("tvm",),
                          tuning=Tuning(root=tmp_path / "tuning"), tuning_key="tiny")  # fmt: skip
    assert again["backend"] == "tvm-metaschedule" and again["candidates"][0]["tuning_trials"] == 2


def test_the_tuning_builder_keeps_its_workers_across_batches():
    """LocalBuilder would start (and import TVM in) fresh workers for each batch; ours builds every batch in the
    same processes, until BATCHES_PER_POOL batches have gone through them."""
    import psutil
    import tvm
    from tvm import te
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    from compiler.tvm_backend import pooled_builder

    a = te.placeholder((64,), name="a")
    mod = tvm.IRModule({"main": te.create_prim_func([a, te.compute((64,), lambda i: a[i] * 2.0, name="b")])})
    target = tvm.target.Target("llvm")
    builder = pooled_builder(max_workers=2, timeout_sec=300, batches_per_pool=2)
    others = {c.pid for c in psutil.Process().children()}
    workers = []
    for _ in range(3):
        results = builder.build([BuilderInput(mod, target), BuilderInput(mod, target)])
        assert [r.error_msg for r in results] == [None, None]
        assert all(Path(r.artifact_path).is_file() for r in results)
        workers.append({c.pid for c in psutil.Process().children()} - others)
    assert workers[0] == workers[1] and workers[0]  # the second batch ran in the first one's processes
    assert not workers[2] & workers[0]  # the third, past batches_per_pool, in fresh ones
    builder.shutdown()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and {c.pid for c in psutil.Process().children()} & workers[2]:
        time.sleep(0.1)
    assert not {c.pid for c in psutil.Process().children()} & workers[2]  # and none outlives the tuning
