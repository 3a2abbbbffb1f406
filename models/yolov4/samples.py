"""YOLOv4's sample requests: the photos scikit-learn ships (no download)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PHOTOS = Path(importlib.util.find_spec("sklearn").origin).parent / "datasets" / "images"


def samples() -> dict[str, bytes]:
    return {name: (PHOTOS / name).read_bytes() for name in ("china.jpg", "flower.jpg")}
