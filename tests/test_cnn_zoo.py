"""The compile benchmark's architectures match torchvision's (parameter counts) and run."""

from __future__ import annotations

import pytest
import torch

from bench.cnn_zoo import MODELS

# torchvision.models: mobilenet_v2 3,504,872; resnet50 25,557,032; resnet152 60,192,808 parameters
TORCHVISION_PARAMETERS = {"mobilenet_v2": 3_504_872, "resnet50": 25_557_032, "resnet152": 60_192_808}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMETERS))
def test_parameter_counts_match_torchvision(name):
    make, _ = MODELS[name]
    assert sum(p.numel() for p in make().parameters()) == TORCHVISION_PARAMETERS[name]


def test_unet_keeps_the_resolution():
    make, shape = MODELS["unet"]
    with torch.no_grad():
        assert make().eval()(torch.rand(*shape)).shape == (1, 2, shape[2], shape[3])


def test_reduced_yolov4_keeps_the_three_heads():
    make, shape = MODELS["yolov4_reduced"]
    with torch.no_grad():
        assert make().eval()(torch.rand(*shape)).shape == (1, 10647, 85)
