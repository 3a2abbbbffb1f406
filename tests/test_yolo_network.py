"""YOLOv4 in PyTorch, laid out as Darknet's yolov4.cfg: structure, size, and the .weights round trip."""

from __future__ import annotations

import numpy as np
import torch

from models.yolov4 import darknet
from models.yolov4.network import build, yolov4_cfg


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
