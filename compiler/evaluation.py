"""The images `sagestack compile` feeds a model besides its random example: an INT8 calibration set, and an
evaluation set on which a reduced precision is judged by what the model serves rather than by tensor error.

A random input says nothing about a quantized detector's boxes; real photos do. None can be downloaded, so the
default sets are the photos that ship in installed packages (scikit-learn's china.jpg and flower.jpg,
matplotlib's grace_hopper.jpg), mirrored and cropped for calibration. `--calibration DIR` takes your own.

An evaluation (`--evaluate NAME`) is named in EVALUATIONS and lives with its model family, which knows how its
outputs read: the module gives `evaluation(shape) -> Evaluation`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EVALUATIONS = {"detections": "models.yolov4.evaluation"}  # --evaluate NAME -> the family module that scores it
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Evaluation:
    """How to turn a photo into the model's input, the fixed photos to judge on, and the score: per photo,
    (reference outputs, candidate outputs) -> metrics, of which `key` must reach `bar`."""

    name: str
    prepare: Callable[[Any], np.ndarray]  # a PIL image -> one input of the compiled shape (the image repeated)
    images: tuple[Path, ...]
    score: Callable[[list[np.ndarray], list[np.ndarray]], dict[str, float]]
    key: str
    bar: float

    @functools.cached_property
    def inputs(self) -> list[np.ndarray]:
        """The prepared images, decoded once for every candidate of a job."""
        return load_inputs(self.images, self.prepare)

    def outputs(self, run: Callable[[np.ndarray], list[np.ndarray]]) -> list[list[np.ndarray]]:
        return [run(x) for x in self.inputs]

    def measure(self, reference: list[list[np.ndarray]], candidate: Callable[[np.ndarray], list[np.ndarray]]
                ) -> dict[str, Any]:  # fmt: skip
        """The score of the candidate against the reference's `outputs` (computed once a job), its mean over
        the images, and whether `key` reaches the bar."""
        pairs = zip(self.images, reference, self.outputs(candidate), strict=True)
        per_image = {path.name: self.score(want, got) for path, want, got in pairs}
        means = {
            k: round(statistics.fmean(v[k] for v in per_image.values()), 4) for k in next(iter(per_image.values()))
        }
        return {"name": self.name, **means, "bar": {self.key: self.bar}, "passes": means[self.key] >= self.bar,
                "images": per_image}  # fmt: skip


def packaged_photos() -> tuple[Path, ...]:
    """Real photos that installed packages ship (ANCHORS.md): scikit-learn's two, matplotlib's one."""
    specs = {name: importlib.util.find_spec(name) for name in ("sklearn", "matplotlib")}
    missing = [name for name, spec in specs.items() if spec is None or not spec.origin]
    if missing:
        raise ValueError(f"the packaged photos need {', '.join(missing)} (make setup); or give --calibration DIR")
    sklearn = Path(specs["sklearn"].origin).parent / "datasets" / "images"
    matplotlib = Path(specs["matplotlib"].origin).parent / "mpl-data" / "sample_data"
    return sklearn / "china.jpg", sklearn / "flower.jpg", matplotlib / "grace_hopper.jpg"


def resize_input(shape: list[int]) -> Callable[[Any], np.ndarray]:
    """The generic preparation: RGB, resized to the input's H x W, 0..1, NCHW."""
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(f"calibrating on images needs an image input [N, 3, H, W], not {shape}")

    def prepare(image: Any) -> np.ndarray:
        height, width = shape[2], shape[3]
        pixels = np.asarray(image.convert("RGB").resize((width, height)), dtype=np.float32) / 255
        return np.repeat(pixels.transpose(2, 0, 1)[None], shape[0], axis=0)  # the compiled batch

    return prepare


def load_inputs(paths: tuple[Path, ...], prepare: Callable[[Any], np.ndarray]) -> list[np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    inputs = []
    for path in paths:
        try:
            with Image.open(path) as image:
                inputs.append(prepare(image))
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"{path}: not an image this can read ({exc})") from None
    return inputs


def calibration_set(prepare: Callable[[Any], np.ndarray], directory: Path | None = None) -> np.ndarray:
    """[N, ...] calibration inputs: every image in `directory`, or views of the packaged photos: each mirrored,
    and cropped to its centre and to its left and right halves (12 inputs). Not the whole photos themselves,
    which the default evaluation judges on."""
    from PIL import Image, ImageOps

    if directory is not None:
        if not Path(directory).is_dir():
            raise ValueError(f"--calibration {directory}: not a folder")
        paths = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ValueError(f"--calibration {directory}: no {'/'.join(IMAGE_SUFFIXES)} images there")
        return np.concatenate(load_inputs(tuple(paths), prepare))
    inputs = []
    for path in packaged_photos():
        with Image.open(path) as image:
            w, h = image.size
            views = (ImageOps.mirror(image), image.crop((w // 6, h // 6, w - w // 6, h - h // 6)),
                     image.crop((0, 0, w // 2, h)), image.crop((w // 2, 0, w, h)))  # fmt: skip
            inputs.extend(prepare(view) for view in views)
    return np.concatenate(inputs)


def load(name: str, shape: list[int]) -> Evaluation:
    if name not in EVALUATIONS:
        raise ValueError(f"--evaluate {name!r}: choose from {', '.join(EVALUATIONS)}")
    return importlib.import_module(EVALUATIONS[name]).evaluation(shape)
