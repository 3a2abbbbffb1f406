"""The anomaly benchmark's real surfaces: crops of scikit-image's photos with drawn defects, in the data set layout
training reads, and the benchmark's summary of held-out seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from models.anomaly import dataset, surfaces
from models.anomaly.bench import TARGET_F1, summary


@pytest.mark.parametrize("surface", surfaces.SURFACES)
def test_a_surface_data_set_is_a_lookout_folder_with_each_defect_drawn_inside_its_box(tmp_path, surface):
    manifest = surfaces.make_dataset(tmp_path, surface, 12, 4, seed=5, test_normal=8, test_anomaly=6)
    loaded = dataset.load(tmp_path)  # what `anomaly train` and the benchmark read
    assert loaded.explicit_test and loaded.counts(loaded.train) == {"normal": 12, "anomaly": 4}
    assert [i.kind for i in loaded.train if i.anomalous] == sorted(surfaces.KINDS)  # by file name
    assert {i.kind for i in loaded.test if i.anomalous} == set(surfaces.KINDS)
    for name, entry in manifest.items():
        img = np.asarray(Image.open(tmp_path / name), dtype=np.float32)
        assert img.shape == (surfaces.SIZE, surfaces.SIZE, 3)
        if entry["kind"]:
            x0, y0, x1, y1 = entry["box"]
            assert 0 <= x0 < x1 <= surfaces.SIZE and 0 <= y0 < y1 <= surfaces.SIZE
    assert json.loads((tmp_path / "manifest.json").read_text())["surface"] == surface


def test_the_same_seed_makes_the_same_images_and_another_seed_others(tmp_path):
    a = surfaces.make_dataset(tmp_path / "a", "brick", 1, 1, seed=3)
    surfaces.make_dataset(tmp_path / "b", "brick", 1, 1, seed=3)
    surfaces.make_dataset(tmp_path / "c", "brick", 1, 1, seed=4)
    for name in a:
        same = (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        other = (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
        assert same and other


def test_a_defect_changes_the_pixels_in_its_box():
    source = surfaces.photo("gravel")
    for kind in surfaces.KINDS:
        clean, _ = surfaces.render(source, np.random.default_rng(9), None)
        dirty, box = surfaces.render(source, np.random.default_rng(9), kind)
        diff = np.abs(np.asarray(dirty, np.float32) - np.asarray(clean, np.float32)).mean(-1)
        x0, y0, x1, y1 = box
        assert diff[y0:y1, x0:x1].mean() > 4 * diff.mean() > 0, kind


def test_the_summary_judges_each_data_set_on_its_held_out_seeds_worst_run():
    runs = [
        {"dataset": "brick", "held_out": False, "f1": 0.5, "auroc": 0.6, "latency_ms": 10.0},
        {"dataset": "brick", "held_out": True, "f1": 0.97, "auroc": 0.99, "latency_ms": 12.0},
        {"dataset": "brick", "held_out": True, "f1": TARGET_F1 - 0.01, "auroc": 0.99, "latency_ms": 14.0},
        {"dataset": "pcb", "held_out": True, "f1": 1.0, "auroc": 1.0, "latency_ms": 9.0},
    ]
    out = summary(runs)
    assert out["brick"]["f1_min"] == TARGET_F1 - 0.01 and not out["brick"]["meets_targets"]
    assert out["brick"]["latency_ms_median"] == 13.0 and out["pcb"]["meets_targets"]
