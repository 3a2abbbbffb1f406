"""The detector's pieces: the ridge filters, the free nearest-neighbour search, the common grid, the threshold."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models.anomaly import model


def test_ridge_filters_answer_lines_at_their_orientation_and_nothing_on_flat_or_ramps():
    kernels = model.ridge_kernels()
    assert np.allclose(kernels.sum(axis=(0, 1)), 0, atol=1e-6)
    image = np.zeros((1, 64, 64, 1), np.float32)
    image[0, 31:33, 8:56] = 1.0  # a bright horizontal line, 2 px wide
    response = tf.nn.conv2d(image, kernels, 1, "SAME").numpy()[0, 32, 32]
    assert response.argmax() == 0  # orientation 0: the kernel's long axis along x
    assert response[0] > 3 * abs(response[1:]).max()
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))[None, ..., None]
    assert abs(tf.nn.conv2d(ramp, kernels, 1, "VALID").numpy()).max() < 1e-4


@pytest.mark.parametrize("cells", [7, model.CHUNK, model.CHUNK + 3])
def test_free_search_is_the_exact_nearest_distance(cells):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(1, 1, cells, 3)).astype(np.float32)
    memory = rng.normal(size=(50, 3)).astype(np.float32)
    got = model.nearest_free(tf.constant(features), tf.constant(memory)).numpy()
    want = np.sqrt(((features[0, 0, :, None] - memory[None]) ** 2).sum(-1).min(-1))
    assert got.shape == (1, 1, cells) and np.allclose(got[0, 0], want, atol=1e-3)


@pytest.mark.parametrize("g", [model.DEFAULT_GEOMETRY, model.Geometry.fast()], ids=["default", "fast"])
def test_every_branch_lands_on_one_grid(g):
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (2, 256, 256, 3)).astype(np.float32))
    placed = model.to_grid(tf.reduce_sum(model.patches(images, g), -1), g)
    shapes = {placed.shape[1:3]} | {
        model.free_features(b, images, g, tf.constant(model.ridge_kernels())).shape[1:3] for b in model.BRANCHES[1:]
    }
    assert shapes == {((256 - g.patch) // g.cell + 1,) * 2}


def test_one_outlier_on_either_side_does_not_move_the_threshold():
    rng = np.random.default_rng(3)
    normal, anomalous = rng.normal(0, 1, 20), rng.normal(6, 1, 10)
    cut = model.choose_threshold(normal, anomalous)
    assert normal.max() < cut < anomalous.min()
    stray_normal, normal_looking = np.append(normal, 5.0), np.append(anomalous, 3.6)
    for n, a in ((stray_normal, anomalous), (normal, normal_looking)):
        assert model.max_f1_threshold(n, a) != pytest.approx(model.max_f1_threshold(normal, anomalous))
        assert normal.max() < model.choose_threshold(n, a) < anomalous.min()
    cuts = model.bootstrap_thresholds(normal, anomalous)
    assert len(cuts) == model.BOOTSTRAP and normal.max() - 1 < np.median(cuts) < anomalous.min()


def test_without_anomalies_the_cut_sits_above_every_normal_score():
    normal = np.array([-1.0, -0.5, 0.2, 0.1])  # z-scores can be negative
    assert model.choose_threshold(normal, np.array([])) > normal.max()
