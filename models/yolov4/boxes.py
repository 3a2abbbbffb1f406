"""YOLO pre- and post-processing that does not depend on the network: letterbox, box mapping, NMS.

Letterbox keeps the aspect ratio: the image is scaled to fit a square and padded with grey
(128), centred. Boxes come back from the network in letterboxed pixels and are mapped to the
original image. NMS is class-wise: boxes of different classes never suppress each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PAD_VALUE = 128
SERVED_DEFAULTS = {"conf_threshold": 0.25, "iou_threshold": 0.45, "max_detections": 100}  # torchvision's cap


@dataclass(frozen=True)
class Letterbox:
    scale: float
    pad_x: float
    pad_y: float
    width: int  # original image size
    height: int

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """[N, 4] x1, y1, x2, y2 in letterboxed pixels -> original pixels, clipped to the image."""
        out = boxes.astype(np.float64).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.height)
        return out


def letterbox(image: Image.Image, size: int = 416) -> tuple[np.ndarray, Letterbox]:
    """RGB image -> float32 [3, size, size] in 0..1, and the mapping back to the original pixels.

    An image decoded at a reduced scale (handler_kit.decode_image's `fit`) carries its original size in
    `info["original_size"]`; boxes map back to that. The resized pixels go straight into the padded tensor.
    """
    width, height = image.info.get("original_size", image.size)
    scale = min(size / width, size / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    resized = np.asarray(image.convert("RGB").resize((new_w, new_h), Image.BILINEAR))
    tensor = np.full((3, size, size), np.float32(PAD_VALUE) / np.float32(255), dtype=np.float32)
    region = tensor[:, pad_y : pad_y + new_h, pad_x : pad_x + new_w]
    np.divide(resized.transpose(2, 0, 1), np.float32(255), out=region, dtype=np.float32)
    return tensor, Letterbox(scale, float(pad_x), float(pad_y), width, height)


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    iou_threshold: float = 0.45,
    max_detections: int | None = None,
) -> np.ndarray:
    """Indices kept by class-wise greedy NMS, highest score first, at most max_detections of them.

    All classes go through one greedy pass in score order, with each class's boxes shifted to a
    region of their own so boxes of different classes never overlap; that is class-wise NMS, and it
    can stop as soon as max_detections boxes are kept. The boxes are put in score order once, and each
    kept box suppresses the later ones through a mask over contiguous slices (no re-gathering per step).
    """
    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    span = float(np.abs(boxes).max()) * 2 + 1
    order = np.argsort(-scores, kind="stable")
    b = (boxes.astype(np.float64) + (classes.astype(np.float64) * span)[:, None])[order]
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, k]) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    alive = np.ones(len(order), dtype=bool)
    keep: list[int] = []
    limit = max_detections or len(order)
    i = 0
    while len(keep) < limit and i < len(order):
        ahead = alive[i:]
        step = int(ahead.argmax())
        if not ahead[step]:
            break
        i += step
        keep.append(int(order[i]))
        j = i + 1
        inter = np.clip(np.minimum(x2[i], x2[j:]) - np.maximum(x1[i], x1[j:]), 0, None)
        inter *= np.clip(np.minimum(y2[i], y2[j:]) - np.maximum(y1[i], y1[j:]), 0, None)
        alive[j:] &= inter <= iou_threshold * np.maximum(areas[i] + areas[j:] - inter, 1e-12)
        i = j
    return np.asarray(keep, dtype=np.int64)


def detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    frame: Letterbox,
    names: tuple[str, ...],
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_detections: int | None = None,
) -> list[dict]:
    """Threshold, NMS, map to the original image: [{"box": [x1,y1,x2,y2], "score", "class_id", "class"}]."""
    confident = np.flatnonzero(scores >= conf_threshold)
    kept = confident[nms(boxes[confident], scores[confident], classes[confident], iou_threshold, max_detections)]
    mapped = frame.to_original(boxes[kept]) if len(kept) else np.zeros((0, 4))
    return [
        {
            "box": [round(float(v), 2) for v in box],
            "score": round(float(scores[i]), 4),
            "class_id": int(classes[i]),
            "class": names[int(classes[i])],
        }
        for i, box in zip(kept, mapped, strict=True)
    ]


def agreement(reference: list[dict], candidate: list[dict], iou_threshold: float = 0.5) -> dict[str, float]:
    """Detection agreement of `candidate` with `reference` (lists as `detections` returns): each candidate box,
    best score first, matches the unmatched reference box of its class it overlaps most, if by at least
    `iou_threshold`, boxes taken half a pixel wider each way (one clipped to zero height at the image's edge
    still overlaps its twin). Precision, recall and F1 of those matches (1.0 each when both are empty)."""
    free = list(range(len(reference)))
    matched = 0
    half_pixel = np.array([-0.5, -0.5, 0.5, 0.5])  # a box covers the pixels it touches: flat ones overlap too
    ref_boxes = np.array([d["box"] for d in reference], dtype=np.float64).reshape(-1, 4) + half_pixel
    for det in sorted(candidate, key=lambda d: -d["score"]):
        same = [i for i in free if reference[i]["class_id"] == det["class_id"]]
        if not same:
            continue
        overlaps = iou(np.asarray(det["box"], dtype=np.float64) + half_pixel, ref_boxes[same])
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold:
            free.remove(same[best])
            matched += 1
    precision = matched / len(candidate) if candidate else float(not reference)
    recall = matched / len(reference) if reference else float(not candidate)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
