"""Lookout-for-Vision-style DetectAnomalies over the served detector (SageMaker TFS handlers).

Takes image/png, image/jpeg or application/x-image. Returns IsAnomalous and Confidence as
Lookout's DetectAnomalies does, plus the anomaly score, the threshold, a coarse anomaly mask (PNG,
base64, over the region of interest) and the bounding box of the anomalous area in image pixels.
The region of interest is applied by the same code as in training (lib/anomaly/preprocess.py).
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import numpy as np
from anomaly.preprocess import INPUT_SIZE, to_input
from handler_kit import UnsupportedType, decode_image, json_response
from PIL import Image

CONFIG_FILE = Path(__file__).with_name("config.json")
IMAGE_TYPES = ("image/png", "image/jpeg", "application/x-image")
_config: dict = {"stamp": None, "versions": {}}


def _version(context) -> dict:
    """The served version's threshold, ROI and size. A project's version started at run time adds itself to
    config.json (models.anomaly.projects), so the file is read again whenever it changes."""
    info = CONFIG_FILE.stat()
    stamp = (info.st_ino, info.st_mtime_ns)  # a file replaced within one clock tick has another inode
    if stamp != _config["stamp"]:
        _config.update(stamp=stamp, versions=json.loads(CONFIG_FILE.read_text())["versions"])
    return _config["versions"][str(context.model_version)]


def input_handler(data, context):
    if context.request_content_type not in IMAGE_TYPES:
        raise UnsupportedType(f"anomaly takes {', '.join(IMAGE_TYPES)}, not {context.request_content_type}")
    cfg = _version(context)
    image = to_input(decode_image(data.read(), context.max_image_pixels), cfg["roi"], cfg["image_size"])
    return {"inputs": {"images": image[None]}}


def output_handler(response, context):
    cfg = _version(context)
    score = float(response.outputs["score"][0])
    amap = response.outputs["anomaly_map"][0]
    threshold = cfg["threshold"]
    anomalous = score >= threshold
    z = abs(score - threshold) / max(cfg["spread"], 1e-6)
    result = {
        "IsAnomalous": bool(anomalous),
        "Confidence": round(1.0 - 0.5 * math.exp(-z), 4),
        "AnomalyScore": round(score, 4),
        "Threshold": round(threshold, 4),
    }
    mask = amap >= threshold
    result["AnomalyMask"] = _mask_png(mask)
    result["BoundingBox"] = _box(mask, amap.shape, cfg) if anomalous and mask.any() else None
    return json_response(result)


def _mask_png(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray((mask * 255).astype(np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _box(mask: np.ndarray, shape: tuple[int, int], cfg: dict) -> dict:
    """Mask cells -> pixels of the original image (through the ROI and the resize)."""
    ys, xs = np.nonzero(mask)
    rx, ry, rw, rh = cfg["roi"] or [0, 0, *cfg["image_size"]]
    cell = INPUT_SIZE / shape[1], INPUT_SIZE / shape[0]
    sx, sy = rw / INPUT_SIZE, rh / INPUT_SIZE
    left, top = rx + xs.min() * cell[0] * sx, ry + ys.min() * cell[1] * sy
    right, bottom = rx + (xs.max() + 1) * cell[0] * sx, ry + (ys.max() + 1) * cell[1] * sy
    return {"Left": int(left), "Top": int(top), "Width": int(right - left), "Height": int(bottom - top)}
