"""Anomaly data sets: the rules, the generator's defect kinds, and the region of interest."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from models.anomaly import dataset as ds
from models.anomaly.generate import KINDS, make_dataset, render
from models.anomaly.preprocess import ImageError, to_input
from server.handler_kit import BadRequest, PayloadTooLarge, decode_image


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("pcb")
    make_dataset(root, 20, 10, seed=3)
    return root


def test_generator_writes_folders_and_manifest(small):
    assert len(list((small / "normal").glob("*.png"))) == 20
    assert len(list((small / "anomaly").glob("*.png"))) == 10
    images = json.loads((small / "manifest.json").read_text())["images"]
    assert {v["kind"] for v in images.values() if v["label"] == "anomaly"} == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_each_defect_changes_its_box(kind):
    """Same seed, same camera: the defect image differs from the normal one inside its box."""
    normal, _ = render(np.random.default_rng(5), None)
    rng = np.random.default_rng(5)
    defect, box = render(rng, kind)
    assert box is not None
    diff = np.abs(np.asarray(defect, np.float32) - np.asarray(normal, np.float32)).sum(-1)
    x0, y0, x1, y1 = (max(0, v) for v in box)
    inside = diff[y0:y1, x0:x1].mean()
    assert inside > 10, f"{kind}: mean difference {inside:.1f} inside its box"


def test_generator_is_seeded(tmp_path):
    make_dataset(tmp_path / "a", 2, 1, seed=11)
    make_dataset(tmp_path / "b", 2, 1, seed=11)
    for name in ("normal/ok_0000.png", "anomaly/scratch_0000.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_minimum_counts_say_what_is_missing(tmp_path):
    make_dataset(tmp_path, 15, 4, seed=1)
    with pytest.raises(ds.DatasetError, match="add 5 normal and 6 anomalous"):
        ds.load(tmp_path)


def test_labels_come_from_folders_and_split_is_stratified(small):
    data = ds.load(small)
    assert not data.explicit_test
    assert data.counts(data.test) == {"normal": 4, "anomaly": 2}
    assert data.counts(data.train) == {"normal": 16, "anomaly": 8}
    assert all(i.anomalous == (i.path.parent.name == "anomaly") for i in data.train + data.test)
    assert not {i.path for i in data.train} & {i.path for i in data.test}
    assert [i.path for i in ds.load(small).test] == [i.path for i in data.test]  # same seed, same split


def test_explicit_test_folder_is_used(small, tmp_path):
    root = tmp_path / "with_test"
    shutil.copytree(small, root)
    make_dataset(tmp_path / "extra", 0, 0, seed=2, test_normal=3, test_anomaly=3)
    shutil.copytree(tmp_path / "extra" / "test", root / "test")
    data = ds.load(root)
    assert data.explicit_test and data.counts(data.test) == {"normal": 3, "anomaly": 3}
    assert data.counts(data.train) == {"normal": 20, "anomaly": 10}


def test_roi_crop_and_resize():
    img = Image.new("RGB", (300, 200), (0, 0, 0))
    img.paste((255, 0, 0), (100, 50, 200, 150))  # a red square exactly where the ROI is
    arr = to_input(img, [100, 50, 100, 100], [300, 200])
    assert arr.shape == (256, 256, 3) and arr[..., 0].min() == 255 and arr[..., 1].max() == 0
    with pytest.raises(ImageError, match="does not fit"):
        to_input(img, [250, 50, 100, 100], [300, 200])
    with pytest.raises(ImageError, match="takes 256x256"):
        to_input(img, None, [256, 256])


def test_corrupt_empty_and_oversized_images():
    with pytest.raises(BadRequest, match="empty"):
        decode_image(b"")
    with pytest.raises(BadRequest, match="not a readable"):
        decode_image(b"\x89PNG\r\n\x1a\n garbage")
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, format="PNG")
    assert decode_image(buf.getvalue()).size == (40, 30)
    with pytest.raises(PayloadTooLarge, match="40x30 pixels: at most 1,000 pixels") as caught:
        decode_image(buf.getvalue(), max_pixels=1000)
    assert caught.value.status_code == 413
