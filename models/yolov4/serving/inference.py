"""YOLOv4 detection handlers: image bytes -> letterbox -> runtime (boxes, best class, score) -> threshold,
class-wise NMS.

Takes application/x-image, image/jpeg or image/png (or application/json {"image": base64,
"conf_threshold": .., "iou_threshold": .., "max_detections": ..}). These can also come as custom
attributes (`conf_threshold=0.3,iou_threshold=0.5,max_detections=50`). Returns at most
max_detections (default 100, as torchvision's detectors) [{"box": [x1, y1, x2, y2], "score",
"class_id", "class"}], best first, in the original image's pixels.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from handler_kit import BadRequest, UnsupportedType, decode_image, json_body, json_response, model_attributes
from yolov4.boxes import SERVED_DEFAULTS, detections, letterbox
from yolov4.boxes import agreement as detection_agreement
from yolov4.coco import CLASSES

CONFIG = json.loads(Path(__file__).with_name("config.json").read_text())
NAMES = tuple(CONFIG.get("names") or CLASSES)  # `sagestack build yolov4 --names`, or COCO's 80
IMAGE_TYPES = ("application/x-image", "image/jpeg", "image/png")
MAX_BOXES = 10647  # what YOLOv4-416's three heads propose


def _thresholds(raw: str, extra: dict) -> dict[str, float]:
    out = dict(SERVED_DEFAULTS)
    pairs = model_attributes(raw)
    for key in SERVED_DEFAULTS:
        value = extra.get(key, pairs.get(key))
        if value is None:
            continue
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise BadRequest(f"{key} must be a number, got {value!r}") from None
        low, high = (1, MAX_BOXES) if key == "max_detections" else (0.0, 1.0)
        if not low <= out[key] <= high or (key == "max_detections" and not out[key].is_integer()):
            raise BadRequest(f"{key} must be between {low} and {high}, got {value}")
    out["max_detections"] = int(out["max_detections"])
    return out


def input_handler(data, context):
    body = data.read()
    extra: dict = {}
    if context.request_content_type == "application/json":
        request = json_body(body)
        try:
            body = base64.b64decode(request["image"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f'send {{"image": <base64>}}: {exc}') from None
        extra = {k: request[k] for k in SERVED_DEFAULTS if k in request}
    elif context.request_content_type not in IMAGE_TYPES:
        raise UnsupportedType(f"yolov4 takes {', '.join(IMAGE_TYPES)} or application/json")
    size = CONFIG["input_size"]
    tensor, frame = letterbox(decode_image(body, context.max_image_pixels, fit=size), size)
    context.yolo = (frame, _thresholds(context.custom_attributes, extra))
    return {"inputs": {"input0": tensor[None]}}


def output_handler(response, context):
    """The graph's rows (x1, y1, x2, y2, score, class per box) -> thresholded, class-wise NMS, original pixels."""
    frame, thresholds = context.yolo
    out = response.outputs["output0"][0]
    found = detections(out[:, :4], out[:, 4], out[:, 5].astype(np.int64), frame, NAMES, **thresholds)
    return json_response(found)


def agreement(production: bytes, shadow: bytes, content_type: str) -> float:
    """A shadow variant's detections against production's: F1 of the boxes matched by IoU 0.5 and class."""
    return detection_agreement(json.loads(production), json.loads(shadow), 0.5)["f1"]
