"""YOLOv4 in PyTorch, laid out as Darknet's yolov4.cfg (and yolov4-tiny.cfg): structure, size, .weights round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.yolov4 import darknet
from models.yolov4.network import Darknet, build, yolov4_cfg


def test_structure_matches_yolov4_cfg():
    sections = darknet.parse_cfg(yolov4_cfg())
    kinds = [s["type"] for s in sections[1:]]
    assert len(kinds) == 162 and kinds.count("convolutional") == 110 and kinds.count("yolo") == 3
    routes = {i: s["layers"] for i, s in enumerate(sections[1:]) if s["type"] == "route"}
    # The long-range routes of the official cfg: neck <- backbone (85, 54) and the head merges.
    assert routes[119] == "-34" and routes[129] == "-75" and routes[153] == "-1,-37" and routes[113] == "-1,-3,-5,-6"
    assert sum(s.filters for s in darknet.conv_specs(sections) if s.filters == 255) == 3 * 255


def test_full_size_parameter_count_is_yolov4s():
    model = build()
    assert sum(p.numel() for p in model.parameters()) == 64_363_101  # Darknet's YOLOv4 at 80 classes


def test_darknet_weights_round_trip_through_the_network():
    source = build(width=0.125, size=128, seed=1)
    with torch.no_grad():  # non-trivial batch-norm statistics, so every field matters
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    header = {"major": 0, "minor": 2, "revision": 5, "seen": 64000}
    data = darknet.write_weights(header, source.specs, source.darknet_blocks())
    target = build(width=0.125, size=128, seed=2)
    got_header, blocks = darknet.read_weights(data, target.specs)
    target.load_darknet(blocks)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        a, b = source(x), target(x)
    assert got_header == header
    assert a.shape == (1, 3 * (16 * 16 + 8 * 8 + 4 * 4), 85)
    assert torch.equal(a, b)


def test_decoded_boxes_are_in_input_pixels():
    model = build(width=0.125, size=160, seed=3)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 160, 160)).numpy()
    centres_x = (out[..., 0] + out[..., 2]) / 2
    assert out.shape == (2, 3 * (20 * 20 + 10 * 10 + 5 * 5), 85)
    assert -40 < centres_x.min() and centres_x.max() < 200  # grid cell + sigmoid offset, in pixels
    assert np.all((out[..., 4:] >= 0) & (out[..., 4:] <= 1))


def test_yolov4_tiny_is_darknets_layout():
    model = build(arch="yolov4-tiny")
    convs = [b for b in model.blocks if b["type"] == "convolutional"]
    assert len(convs) == 21 and sum(p.numel() for p in model.parameters()) == 6_056_606  # yolov4-tiny's
    assert [(g, k) for g, k in model.route_groups if g > 1] == [(2, 1)] * 3  # the CSP splits
    with torch.no_grad():
        assert model(torch.rand(1, 3, 416, 416)).shape == (1, 3 * (13 * 13 + 26 * 26), 85)


@pytest.mark.stack
def test_any_yolov4_family_cfg_builds_with_its_weights_and_names_and_serves(tmp_path):
    """yolov4-tiny with 3 classes from a cfg, .weights and a names file, through `sagestack build` and the stack."""
    import importlib.util
    import subprocess
    import sys

    import requests

    from bench.stack import ROOT, start_stack
    from compiler.artifact import load_traced
    from models.yolov4.network import Candidates, yolov4_tiny_cfg

    cfg = tmp_path / "tiny3.cfg"
    cfg.write_text(yolov4_tiny_cfg(classes=3, size=160))
    source = Darknet(cfg.read_text())
    header = {"major": 0, "minor": 2, "revision": 5, "seen": 32013312}
    (tmp_path / "tiny3.weights").write_bytes(darknet.write_weights(header, source.specs, source.darknet_blocks()))
    (tmp_path / "tiny3.names").write_text("cat\ndog\nbird\n")
    argv = [sys.executable, "-m", "server.cli", "build", "yolov4", "--out", str(tmp_path / "model" / "tiny3")]
    args = ["--cfg", str(cfg), "--weights", str(tmp_path / "tiny3.weights")]
    bad = subprocess.run(argv + args, cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "the cfg has 3 classes: give their names with --names" in bad.stderr
    subprocess.run(argv + args + ["--names", str(tmp_path / "tiny3.names")], cwd=ROOT, check=True)

    traced = load_traced(tmp_path / "model" / "tiny3" / "1" / "model.tar.gz")
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(traced(x), Candidates(source.eval())(x))  # the weights went in as written
    photo = Path(importlib.util.find_spec("sklearn").origin).parent / "datasets" / "images" / "china.jpg"
    stack = start_stack(tmp_path / "model", tmp_path / "run")
    try:
        headers = {"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": "conf_threshold=0.01"}
        r = requests.post(stack.url + "/invocations", data=photo.read_bytes(), headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        found = r.json()
        assert found and {d["class"] for d in found} <= {"cat", "dog", "bird"}
    finally:
        assert stack.stop() == 0
