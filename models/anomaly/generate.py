"""A procedural printed-circuit-board data set, as Lookout for Vision's demo kit photographs one.

Every image shows the same board design (traces, pads, an IC with pins, passive components) under
the variation a camera adds: small shifts and rotations, lighting changes, blur and noise. Anomalous
images carry one of the kit's four defects: scratch, bent pin, bad solder, missing component.
Generation is seeded, and each defect's bounding box is recorded in the manifest.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
KINDS = ("scratch", "bent_pin", "bad_solder", "missing_component")
BOARD = (24, 92, 52)
COPPER = (196, 160, 72)
SOLDER = (200, 200, 205)


@dataclass(frozen=True)
class Design:
    """The fixed board layout (one product); positions are in a 256x256 frame."""

    ic: tuple[int, int, int, int] = (88, 84, 168, 164)
    pins_per_side: int = 8
    passives: tuple[tuple[int, int, int, int], ...] = (
        (30, 40, 52, 50),
        (30, 200, 52, 210),
        (196, 36, 206, 58),
        (204, 196, 226, 206),
    )
    pads: tuple[tuple[int, int], ...] = ((40, 120), (216, 128), (128, 30), (128, 228), (60, 160))

    def pins(self) -> list[tuple[int, int, int, int]]:
        x0, y0, x1, y1 = self.ic
        step = (x1 - x0) / self.pins_per_side
        pins = []
        for i in range(self.pins_per_side):
            cx = int(x0 + step * (i + 0.5))
            pins.append((cx - 3, y0 - 12, cx + 3, y0))  # top
            pins.append((cx - 3, y1, cx + 3, y1 + 12))  # bottom
        return pins


DESIGN = Design()


def _draw_board(draw: ImageDraw.ImageDraw, design: Design, skip_passive: int | None, bent: int | None) -> None:
    for (x, y), (tx, ty) in zip(design.pads, [(88, 124), (168, 124), (128, 84), (128, 164), (88, 150)], strict=True):
        draw.line([(x, y), (tx, y), (tx, ty)], fill=COPPER, width=4)
    for i, (x0, y0, x1, y1) in enumerate(design.passives):
        if x1 - x0 > y1 - y0:  # two solder pads at the ends; bare board between them
            draw.rectangle([x0 - 4, y0 - 2, x0 + 4, y1 + 2], fill=COPPER)
            draw.rectangle([x1 - 4, y0 - 2, x1 + 4, y1 + 2], fill=COPPER)
        else:
            draw.rectangle([x0 - 2, y0 - 4, x1 + 2, y0 + 4], fill=COPPER)
            draw.rectangle([x0 - 2, y1 - 4, x1 + 2, y1 + 4], fill=COPPER)
        if i != skip_passive:
            draw.rectangle([x0, y0, x1, y1], fill=(140, 100, 60))
            draw.rectangle([x0 + 3, y0 + 2, x1 - 3, y1 - 2], fill=(170, 130, 80))
    for x, y in design.pads:
        draw.ellipse([x - 7, y - 7, x + 7, y + 7], fill=SOLDER)
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(40, 40, 40))
    for i, (x0, y0, x1, y1) in enumerate(design.pins()):
        if i == bent:
            top = y0 < design.ic[1]
            base = (x0 + x1) / 2
            tip_y = y0 if top else y1
            root_y = y1 if top else y0
            draw.line([(base, root_y), (base + 10, tip_y + (4 if top else -4))], fill=(185, 185, 190), width=6)
        else:
            draw.rectangle([x0, y0, x1, y1], fill=(185, 185, 190))
    x0, y0, x1, y1 = design.ic
    draw.rectangle([x0, y0, x1, y1], fill=(28, 28, 30))
    draw.ellipse([x0 + 6, y0 + 6, x0 + 14, y0 + 14], fill=(60, 60, 64))


def render(rng: np.random.Generator, kind: str | None = None) -> tuple[Image.Image, list[int] | None]:
    """One photo of the board: (image, defect box [x0, y0, x1, y1] or None)."""
    design = DESIGN
    img = Image.new("RGB", (SIZE, SIZE), BOARD)
    draw = ImageDraw.Draw(img)
    box: list[int] | None = None
    skip = bent = None
    if kind == "missing_component":
        skip = int(rng.integers(len(design.passives)))
        x0, y0, x1, y1 = design.passives[skip]
        box = [x0 - 4, y0 - 2, x1 + 4, y1 + 2]
    if kind == "bent_pin":
        bent = int(rng.integers(len(design.pins())))
        x0, y0, x1, y1 = design.pins()[bent]
        box = [x0 - 2, y0 - 4, x1 + 12, y1 + 4]
    _draw_board(draw, design, skip, bent)
    if kind == "bad_solder":
        x, y = design.pads[int(rng.integers(len(design.pads)))]
        cx, cy = x + rng.uniform(-9, 9), y + rng.uniform(-9, 9)  # a blob of solder spilling off the pad
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=8))
        radii = rng.uniform(6, 13, size=8)
        pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(radii, angles, strict=True)]
        draw.polygon(pts, fill=(150, 150, 138))
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        box = [int(min(xs)), int(min(ys)), int(max(xs)) + 1, int(max(ys)) + 1]
    if kind == "scratch":
        x0, y0 = rng.uniform(20, 236, size=2)
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(40, 90)
        x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
        shade = int(rng.choice([235, 12]))
        draw.line([(x0, y0), (x1, y1)], fill=(shade, shade, shade), width=int(rng.integers(2, 4)))
        box = [int(min(x0, x1)) - 2, int(min(y0, y1)) - 2, int(max(x0, x1)) + 3, int(max(y0, y1)) + 3]
    return _camera(img, rng), box


def _camera(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """What a fixed camera adds: ±3 px shift, ±1 degree, lighting, blur, sensor noise."""
    dx, dy = rng.integers(-3, 4, size=2)
    img = img.rotate(float(rng.uniform(-1, 1)), translate=(int(dx), int(dy)), fillcolor=BOARD, resample=Image.BILINEAR)
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 1.0))))
    arr = np.asarray(img, dtype=np.float32)
    gain = rng.uniform(0.85, 1.15)
    ramp = np.linspace(-1, 1, SIZE)[None, :, None] * rng.uniform(-12, 12)
    arr = arr * gain + ramp + rng.normal(0, 3.0, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_dataset(
    out: Path, normal: int, anomaly: int, seed: int, test_normal: int = 0, test_anomaly: int = 0
) -> dict[str, dict]:
    """OUT/normal, OUT/anomaly (and OUT/test/... when asked); kinds cycle through KINDS."""
    rng = np.random.default_rng(seed)
    manifest: dict[str, dict] = {}
    plan = [("normal", normal, False), ("anomaly", anomaly, True)]
    plan += [("test/normal", test_normal, False), ("test/anomaly", test_anomaly, True)]
    total = sum(n for _, n, _ in plan)
    done = 0
    for folder, count, anomalous in plan:
        if not count:
            continue
        (out / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            kind = KINDS[i % len(KINDS)] if anomalous else None
            img, box = render(rng, kind)
            name = f"{folder}/{kind or 'ok'}_{i:04d}.png"
            img.save(out / name)
            manifest[name] = {"label": "anomaly" if anomalous else "normal", "kind": kind, "box": box}
            done += 1
            if done % 25 == 0 or done == total:
                print(f"\r[make-dataset] {done}/{total} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    (out / "manifest.json").write_text(json.dumps({"seed": seed, "images": manifest}, indent=1))
    return manifest
