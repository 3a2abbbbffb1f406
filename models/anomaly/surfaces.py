"""Real photographed surfaces with drawn defects: the anomaly benchmark's data beyond our own PCB generator.

The photos are textures that ship inside scikit-image's wheel (brick, grass, gravel: 512x512 greyscale). A normal
image is a 256x256 crop of one photo, as a camera over a moving web of material sees it: a crop at any place of the
photo, under a lighting change (gain and a ramp), a little blur and sensor noise. An anomalous image carries one
drawn defect: a scratch, a stain, a hole or a crack. The same folder layout and manifest as `generate.py` (the
defect's kind and box), so `sagestack anomaly train` and the benchmark read both alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
SURFACES = ("brick", "grass", "gravel")
KINDS = ("scratch", "stain", "hole", "crack")


def photo(surface: str) -> np.ndarray:
    """The 512x512 greyscale photo, as float32 RGB (scikit-image's own data files; tooling only)."""
    from skimage import data

    if surface not in SURFACES:
        raise ValueError(f"surface {surface!r}: one of {', '.join(SURFACES)}")
    grey = getattr(data, surface)().astype(np.float32)
    return np.repeat(grey[..., None], 3, axis=-1)


def render(source: np.ndarray, rng: np.random.Generator, kind: str | None) -> tuple[Image.Image, list[int] | None]:
    """One camera frame of the surface (a random crop, lighting, blur, noise), with the defect `kind` drawn."""
    y, x = rng.integers(0, source.shape[0] - SIZE + 1), rng.integers(0, source.shape[1] - SIZE + 1)
    blur, gain, offset, slope = rng.uniform(0.2, 0.8), rng.uniform(0.8, 1.2), rng.uniform(-15, 15), rng.uniform(-15, 15)
    noise = np.random.default_rng(rng.integers(2**32))  # the camera is drawn before the defect: same seed, same shot
    img = Image.fromarray(np.clip(source[y : y + SIZE, x : x + SIZE], 0, 255).astype(np.uint8))
    box = _defect(img, rng, kind) if kind else None
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(float(blur))), dtype=np.float32)
    ramp = np.linspace(-1, 1, SIZE)[None, :, None] * slope
    arr = arr * gain + offset + ramp + noise.normal(0, 3.0, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), box


def _defect(img: Image.Image, rng: np.random.Generator, kind: str) -> list[int]:
    """Draw one defect on the crop; its bounding box (x0, y0, x1, y1)."""
    draw = ImageDraw.Draw(img)
    mean = float(np.asarray(img).mean())
    cx, cy = rng.uniform(48, SIZE - 48, size=2)
    if kind == "scratch":  # a thin straight line, lighter or darker than the surface
        angle, length = rng.uniform(0, np.pi), rng.uniform(45, 100)
        dx, dy = length / 2 * np.cos(angle), length / 2 * np.sin(angle)
        shade = int(np.clip(mean + rng.choice([-1, 1]) * rng.uniform(70, 110), 0, 255))
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=(shade,) * 3, width=int(rng.integers(2, 4)))
        return _box([cx - dx, cx + dx], [cy - dy, cy + dy], 3)
    if kind == "stain":  # a soft blotch of colour, blended into the surface
        r = rng.uniform(12, 26)
        tint = np.array(rng.choice([(120, 70, 30), (40, 40, 90), (150, 140, 40)]), dtype=np.float32)
        yy, xx = np.mgrid[:SIZE, :SIZE]
        alpha = np.clip(1 - np.hypot(xx - cx, yy - cy) / r, 0, 1)[..., None] ** 0.7 * rng.uniform(0.5, 0.75)
        arr = np.asarray(img, dtype=np.float32)
        img.paste(Image.fromarray(np.clip(arr * (1 - alpha) + tint * alpha, 0, 255).astype(np.uint8)))
        return _box([cx - r, cx + r], [cy - r, cy + r])
    if kind == "hole":  # a dark irregular opening with a light rim
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=9))
        radii = rng.uniform(6, 13, size=9)
        pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(radii, angles, strict=True)]
        draw.polygon(pts, fill=(int(rng.uniform(5, 30)),) * 3, outline=(int(np.clip(mean + 60, 0, 255)),) * 3)
        return _box([p[0] for p in pts], [p[1] for p in pts], 1)
    if kind == "crack":  # a dark jagged random walk
        points, angle = [(cx, cy)], rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(8, 14))):
            angle += rng.uniform(-0.7, 0.7)
            step = rng.uniform(5, 9)
            points.append((points[-1][0] + step * np.cos(angle), points[-1][1] + step * np.sin(angle)))
        shade = int(np.clip(mean - rng.uniform(80, 120), 0, 255))
        draw.line(points, fill=(shade,) * 3, width=2, joint="curve")
        return _box([p[0] for p in points], [p[1] for p in points], 2)
    raise ValueError(f"defect kind {kind!r}: one of {', '.join(KINDS)}")


def _box(xs, ys, pad: float = 0) -> list[int]:
    clip = lambda v: int(np.clip(v, 0, SIZE))  # noqa: E731
    return [clip(min(xs) - pad), clip(min(ys) - pad), clip(max(xs) + pad + 1), clip(max(ys) + pad + 1)]


def make_dataset(
    out: Path, surface: str, normal: int, anomaly: int, seed: int, test_normal: int = 0, test_anomaly: int = 0
) -> dict[str, dict]:
    """OUT/normal, OUT/anomaly (and OUT/test/...) of one surface; kinds cycle through KINDS."""
    source, rng = photo(surface), np.random.default_rng(seed)
    manifest: dict[str, dict] = {}
    plan = [("normal", normal, False), ("anomaly", anomaly, True)]
    plan += [("test/normal", test_normal, False), ("test/anomaly", test_anomaly, True)]
    for folder, count, anomalous in plan:
        if count:
            (out / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            kind = KINDS[i % len(KINDS)] if anomalous else None
            img, box = render(source, rng, kind)
            name = f"{folder}/{kind or 'ok'}_{i:04d}.png"
            img.save(out / name)
            manifest[name] = {"label": "anomaly" if anomalous else "normal", "kind": kind, "box": box}
    (out / "manifest.json").write_text(json.dumps({"surface": surface, "seed": seed, "images": manifest}, indent=1))
    return manifest
