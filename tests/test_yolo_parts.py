"""YOLOv4's network-independent parts: letterbox and box mapping, class-wise NMS, Darknet files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models.yolov4 import darknet
from models.yolov4.boxes import Letterbox, agreement, detections, letterbox, nms
from models.yolov4.coco import CLASSES


def test_letterbox_geometry_and_box_round_trip():
    img = Image.new("RGB", (640, 480), (0, 0, 0))
    img.paste((255, 0, 0), (100, 50, 300, 250))
    tensor, frame = letterbox(img, 416)
    assert tensor.shape == (3, 416, 416) and tensor.dtype == np.float32
    assert frame.scale == pytest.approx(0.65) and (frame.pad_x, frame.pad_y) == (0.0, 52.0)
    assert tensor[:, 10, 10] == pytest.approx([128 / 255] * 3)  # the grey band
    # The red square lands where the mapping says: (100,50,300,250) * 0.65 + (0, 52).
    assert tensor[0, 84 + 2 : 214 - 2, 65 + 2 : 195 - 2].min() > 0.95
    assert tensor[0, 84 - 3, 130] < 0.1
    letterboxed = np.array([[65.0, 84.5, 195.0, 214.5]])
    assert frame.to_original(letterboxed) == pytest.approx(np.array([[100, 50, 300, 250]]))


def test_a_large_jpeg_is_decoded_at_reduced_scale_and_maps_back_to_its_own_pixels():
    import io

    from server.handler_kit import decode_image

    ramp = np.linspace(0, 255, 2400, dtype=np.float32)[None, :, None] + np.zeros((1800, 1, 3), np.float32)
    buf = io.BytesIO()
    Image.fromarray(ramp.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    drafted = decode_image(buf.getvalue(), fit=416)
    full = decode_image(buf.getvalue())
    assert drafted.size == (600, 450) and full.size == (2400, 1800)  # 1/4 in the decoder: still covers 416x312
    assert drafted.info["original_size"] == (2400, 1800)
    (small, frame), (big, full_frame) = letterbox(drafted, 416), letterbox(full, 416)
    assert frame == full_frame and (frame.width, frame.height) == (2400, 1800)
    assert float(np.abs(small - big).mean()) < 0.01  # the same picture at the network's size
    png = io.BytesIO()
    Image.new("RGB", (800, 600)).save(png, format="PNG")
    assert decode_image(png.getvalue(), fit=416).size == (800, 600)  # PNG has no reduced decode: whole


def test_nms_keeps_what_a_plain_greedy_loop_keeps():
    def greedy(boxes, scores, classes, threshold, limit):
        def overlap(a, b):
            w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
            return w * h / max(union, 1e-12)

        keep: list[int] = []
        for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):  # sorted() is stable, as argsort(stable)
            if all(classes[k] != classes[i] or overlap(boxes[k], boxes[i]) <= threshold for k in keep):
                keep.append(i)
        return keep[:limit]

    rng = np.random.default_rng(3)
    for trial in range(60):
        n = int(rng.integers(0, 60))
        xy, wh = rng.random((n, 2)) * 50, rng.random((n, 2)) * 30
        boxes = np.concatenate([xy, xy + wh], 1)
        if trial % 3 == 0 and n:
            boxes[: n // 2] = boxes[0]  # duplicates and exact score ties
        scores, classes = rng.random(n).round(1), rng.integers(0, 3, n)
        limit = int(rng.integers(1, 20)) if trial % 2 else None
        assert nms(boxes, scores, classes, 0.45, limit).tolist() == greedy(boxes, scores, classes, 0.45, limit)


def test_detection_agreement_matches_by_class_and_overlap():
    def det(box, score, cls=0):
        return {"box": box, "score": score, "class_id": cls}

    ref = [det([0, 0, 10, 10], 0.9), det([20, 20, 30, 30], 0.8), det([0, 0, 10, 10], 0.7, cls=1)]
    same_shuffled = [ref[2], ref[0], ref[1]]
    assert agreement(ref, same_shuffled) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    shifted = [det([1, 1, 11, 11], 0.9), det([20, 20, 30, 30], 0.8, cls=2)]  # IoU 0.68; wrong class
    assert agreement(ref, shifted, iou_threshold=0.5) == pytest.approx({"precision": 0.5, "recall": 1 / 3, "f1": 0.4})
    assert agreement(ref, shifted, iou_threshold=0.75)["precision"] == 0.0
    assert agreement([], []) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert agreement(ref, [])["recall"] == 0.0


def test_box_mapping_clips_to_the_image():
    frame = Letterbox(scale=0.5, pad_x=8, pad_y=0, width=100, height=200)
    out = frame.to_original(np.array([[0.0, -4.0, 70.0, 120.0]]))
    assert out.tolist() == [[0.0, 0.0, 100.0, 200.0]]


def test_nms_hand_made_cases():
    boxes = np.array(
        [
            [0, 0, 10, 10],  # 0: best of its cluster
            [1, 1, 11, 11],  # 1: IoU 0.68 with 0, same class -> suppressed
            [1, 1, 11, 11],  # 2: same place, another class -> kept
            [20, 20, 30, 30],  # 3: far away -> kept
            [0, 5, 10, 15],  # 4: IoU 1/3 with 0 -> kept at 0.45
        ],
        dtype=np.float64,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    classes = np.array([0, 0, 1, 0, 0])
    assert nms(boxes, scores, classes, 0.45).tolist() == [0, 2, 3, 4]
    assert nms(boxes, scores, classes, 0.3).tolist() == [0, 2, 3]  # 1/3 > 0.3 now suppresses 4
    assert nms(boxes, scores, classes, 0.45, max_detections=2).tolist() == [0, 2]  # the best two survivors
    assert nms(boxes[:0], scores[:0], classes[:0]).tolist() == []


def test_detections_threshold_map_and_shape():
    frame = Letterbox(scale=2.0, pad_x=0, pad_y=10, width=200, height=100)
    boxes = np.array([[20, 30, 60, 70], [22, 32, 62, 72], [100, 50, 140, 90]], dtype=np.float64)
    out = detections(boxes, np.array([0.9, 0.8, 0.2]), np.array([16, 16, 0]), frame, CLASSES, 0.25, 0.45)
    assert out == [{"box": [10.0, 10.0, 30.0, 30.0], "score": 0.9, "class_id": 16, "class": "dog"}]
    assert detections(boxes, np.array([0.1, 0.1, 0.1]), np.array([0, 0, 0]), frame, CLASSES) == []


TINY_CFG = """
[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=mish

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=8
size=1
activation=mish

[shortcut]
from=-3
activation=linear

[route]
layers=-1,-4

[convolutional]
batch_normalize=1
filters=4
size=3
activation=leaky

[upsample]
stride=2

[convolutional]
size=1
filters=6
activation=linear

[yolo]
mask=0,1
classes=1
"""


def random_blocks(specs, rng):
    blocks = []
    for s in specs:
        block = {"bias": rng.normal(size=s.filters), "weights": rng.normal(size=s.weight_shape)}
        if s.batch_normalize:
            block |= {
                "scale": rng.normal(size=s.filters),
                "mean": rng.normal(size=s.filters),
                "var": rng.random(s.filters),
            }
        blocks.append(block)
    return blocks


def test_cfg_channels_are_tracked():
    specs = darknet.conv_specs(darknet.parse_cfg(TINY_CFG))
    assert [(s.in_channels, s.filters, s.size, s.batch_normalize) for s in specs] == [
        (3, 8, 3, True),
        (8, 8, 1, True),
        (16, 4, 3, True),  # route of the shortcut (8) and the first conv (8)
        (4, 6, 1, False),
    ]


@pytest.mark.parametrize(("major", "minor", "header_bytes"), [(0, 2, 20), (0, 1, 16)])
def test_weights_round_trip(tmp_path, major, minor, header_bytes):
    specs = darknet.conv_specs(darknet.parse_cfg(TINY_CFG))
    blocks = random_blocks(specs, np.random.default_rng(0))
    header = {"major": major, "minor": minor, "revision": 5, "seen": 32013312}
    data = darknet.write_weights(header, specs, blocks)
    n_values = sum(s.filters * (4 if s.batch_normalize else 1) + int(np.prod(s.weight_shape)) for s in specs)
    assert len(data) == header_bytes + 4 * n_values
    (tmp_path / "tiny.cfg").write_text(TINY_CFG)
    (tmp_path / "tiny.weights").write_bytes(data)
    _, got_header, got = darknet.load(tmp_path / "tiny.cfg", tmp_path / "tiny.weights")
    assert got_header == header
    for want, have in zip(blocks, got, strict=True):
        assert want.keys() == have.keys()
        for key in want:
            assert np.array_equal(np.asarray(want[key], dtype=np.float32), have[key])


def test_mismatched_weights_and_bad_cfg():
    specs = darknet.conv_specs(darknet.parse_cfg(TINY_CFG))
    data = darknet.write_weights(
        {"major": 0, "minor": 2, "revision": 0, "seen": 0}, specs, random_blocks(specs, np.random.default_rng(1))
    )
    with pytest.raises(darknet.DarknetError, match="ends inside the convolution"):
        darknet.read_weights(data[:-8], specs)
    with pytest.raises(darknet.DarknetError, match="values are left"):
        darknet.read_weights(data + b"\x00" * 8, specs)
    with pytest.raises(darknet.DarknetError, match="starts with a \\[net\\]"):
        darknet.parse_cfg("[convolutional]\nfilters=1\n")
    with pytest.raises(darknet.DarknetError, match="unsupported block"):
        darknet.conv_specs(darknet.parse_cfg("[net]\n[lstm]\n"))
