"""Lookout-style data sets: labels from folder names, minimum counts, and the train/test split.

DATASET/normal and DATASET/anomaly hold the images; DATASET/test/normal and DATASET/test/anomaly,
when present, are the test set. Otherwise a stratified split with a fixed seed makes one. A
manifest.json from the generator (optional) records each anomaly's defect kind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_NORMAL, MIN_ANOMALY = 20, 10
MIN_TRAIN_NORMAL = 10  # with an explicit test/ folder
EXTENSIONS = {".png", ".jpg", ".jpeg"}
TEST_FRACTION = 0.2


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class Item:
    path: Path
    anomalous: bool
    kind: str | None


@dataclass
class Dataset:
    train: list[Item]
    test: list[Item]
    explicit_test: bool

    def counts(self, items: list[Item]) -> dict[str, int]:
        return {"normal": sum(not i.anomalous for i in items), "anomaly": sum(i.anomalous for i in items)}


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)


def load(root: Path, seed: int = 0) -> Dataset:
    if not root.is_dir():
        raise DatasetError(f"data set folder {root} does not exist")
    kinds = {}
    manifest = root / "manifest.json"
    if manifest.is_file():
        kinds = {k: v.get("kind") for k, v in json.loads(manifest.read_text())["images"].items()}

    def items(sub: str, anomalous: bool) -> list[Item]:
        return [Item(p, anomalous, kinds.get(str(p.relative_to(root)))) for p in _images(root / sub)]

    train = items("normal", False) + items("anomaly", True)
    test = items("test/normal", False) + items("test/anomaly", True)
    everything = train + test
    n_normal = sum(not i.anomalous for i in everything)
    n_anomaly = sum(i.anomalous for i in everything)
    if n_normal < MIN_NORMAL or n_anomaly < MIN_ANOMALY:
        raise DatasetError(
            f"a data set needs at least {MIN_NORMAL} normal and {MIN_ANOMALY} anomalous images; {root} has "
            f"{n_normal} normal and {n_anomaly} anomalous: add {max(0, MIN_NORMAL - n_normal)} normal and "
            f"{max(0, MIN_ANOMALY - n_anomaly)} anomalous (in {root}/normal and {root}/anomaly)"
        )
    if test:
        if sum(not i.anomalous for i in train) < MIN_TRAIN_NORMAL or not any(i.anomalous for i in test):
            raise DatasetError(
                f"with a test/ folder, normal/ needs at least {MIN_TRAIN_NORMAL} images and test/anomaly at least 1"
            )
        return Dataset(train, test, explicit_test=True)
    return _split(train, seed)


def _split(items: list[Item], seed: int) -> Dataset:
    """Stratified: TEST_FRACTION of each class (at least one) goes to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for anomalous in (False, True):
        group = [i for i in items if i.anomalous == anomalous]
        order = rng.permutation(len(group))
        n_test = max(1, round(len(group) * TEST_FRACTION))
        test += [group[k] for k in order[:n_test]]
        train += [group[k] for k in order[n_test:]]
    return Dataset(train, test, explicit_test=False)
