"""`sagestack compile --evaluate detections`: a compiled YOLO judged by the detections it serves.

Each packaged photo is letterboxed as the handler does, run through the uncompiled model and the candidate,
and both outputs ([1, boxes, 6] rows of network.Candidates) go through the handler's threshold and NMS. The
candidate's detections are matched to the reference's by IoU (boxes.agreement); a reduced precision replaces
FP32 when the mean F1 reaches AGREEMENT_BAR.
"""

from __future__ import annotations

import numpy as np

from compiler.evaluation import Evaluation, packaged_photos
from models.yolov4.boxes import SERVED_DEFAULTS, Letterbox, agreement, detections, letterbox

AGREEMENT_BAR = 0.9  # mean F1 at IoU 0.5 against FP32: the bar for `make models` to serve a reduced precision
IOU_MATCH = 0.5


def served(output: np.ndarray, size: int) -> list[dict]:
    """The handler's detections from one output, in letterboxed pixels (the same frame for both sides)."""
    rows = output[0]
    classes = rows[:, 5].astype(np.int64)
    names = tuple(str(i) for i in range(int(classes.max(initial=0)) + 1))
    return detections(rows[:, :4], rows[:, 4], classes, Letterbox(1.0, 0.0, 0.0, size, size), names, **SERVED_DEFAULTS)


def evaluation(shape: list[int]) -> Evaluation:
    size = shape[-1]

    def score(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, float]:
        want, got = served(reference[0], size), served(candidate[0], size)
        return {**agreement(want, got, IOU_MATCH), "detections_reference": len(want), "detections": len(got)}

    return Evaluation(
        name=f"detection agreement with the uncompiled model (IoU {IOU_MATCH})",
        prepare=lambda image: np.repeat(letterbox(image, size)[0][None], shape[0], axis=0),  # the compiled batch
        images=packaged_photos(),
        score=score,
        key="f1",
        bar=AGREEMENT_BAR,
    )
