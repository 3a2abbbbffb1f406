"""The anomaly model's sample requests: a normal board and one of each defect kind, from the generator."""

from __future__ import annotations

import io

import numpy as np

from models.anomaly.generate import KINDS, render


def _png(kind: str | None, seed: int) -> bytes:
    img, _ = render(np.random.default_rng(seed), kind)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def samples() -> dict[str, bytes]:
    return {"normal.png": _png(None, 2024)} | {f"{kind}.png": _png(kind, 2024) for kind in KINDS}
