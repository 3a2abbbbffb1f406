"""A PatchCore-style detector that learns "normal" from a few images, with no pretrained weights.

Features come from the data alone: each image is normalised per channel (lighting), cut into 8x8
patches every 2 pixels, and projected onto the principal components of normal patches. The memory
holds every normal training image's feature map. A test patch's anomaly is its distance to the
nearest memory patch at nearly the same place (within +-4 cells, i.e. +-8 px, which absorbs camera
shifts yet still notices a component missing from its spot), divided by how far normal images
typically are there. The image score is the largest smoothed anomaly.

`Geometry.fast()` (stride 4, +-2 cells) trades accuracy for ~5x less compute, for tests.

One TF graph does all of it, so training-time evaluation and serving run the same computation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

COMPONENTS = 16


@dataclass(frozen=True)
class Geometry:
    patch: int = 8
    stride: int = 2
    radius: int = 4  # in cells

    @classmethod
    def fast(cls) -> Geometry:
        return cls(8, 4, 2)


DEFAULT_GEOMETRY = Geometry()


def _tf():
    import tensorflow as tf

    return tf


def patches(images, g: Geometry):
    """[B, H, W, 3] -> per-channel normalised patches [B, h, w, patch*patch*3]."""
    tf = _tf()
    mu, var = tf.nn.moments(images, axes=[1, 2], keepdims=True)
    x = (images - mu) / tf.sqrt(var + 1.0)
    return tf.image.extract_patches(x, [1, g.patch, g.patch, 1], [1, g.stride, g.stride, 1], [1, 1, 1, 1], "VALID")


def patch_features(images, mean, components, g: Geometry):
    """[B, H, W, 3] -> [B, h, w, COMPONENTS]."""
    tf = _tf()
    return tf.tensordot(patches(images, g) - mean, components, axes=1)


def nearest_distance(features, memory, g: Geometry, memory_sq=None):
    """Per cell, the distance to the closest memory cell within +-radius cells. [B,h,w,D],[N,h,w,D] -> [B,h,w].

    The (small) feature map is shifted instead of the (large) memory, so each offset reads the
    memory once and copies nothing: serving is memory-bandwidth bound.
    """
    tf = _tf()
    h, w, r = tf.shape(memory)[1], tf.shape(memory)[2], g.radius
    m2 = tf.reduce_sum(memory * memory, -1) if memory_sq is None else memory_sq  # [N,h,w]
    pad = [[0, 0], [r, r], [r, r]]
    f_pad = tf.pad(features, [*pad, [0, 0]], mode="SYMMETRIC")
    f2_pad = tf.reduce_sum(f_pad * f_pad, -1)
    best = None
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            # shifted[h'] = f[h' - dy]: each feature moved onto the memory cell it is compared with.
            shifted = f_pad[:, r - dy : r - dy + h, r - dx : r - dx + w, :]
            shifted2 = f2_pad[:, r - dy : r - dy + h, r - dx : r - dx + w]
            d = shifted2[:, None] + m2[None] - 2.0 * tf.einsum("bhwd,nhwd->bnhw", shifted, memory)
            d = tf.pad(tf.reduce_min(d, axis=1), pad, mode="SYMMETRIC")
            back = d[:, r + dy : r + dy + h, r + dx : r + dx + w]  # back[h] = d[h + dy]: the feature's own cell
            best = back if best is None else tf.minimum(best, back)
    return tf.sqrt(tf.maximum(best, 0.0))


def smooth(maps):
    tf = _tf()
    return tf.nn.avg_pool2d(maps[..., None], 3, 1, "SAME")[..., 0]


@dataclass
class Fitted:
    geometry: Geometry
    mean: np.ndarray  # [patch*patch*3]
    components: np.ndarray  # [patch*patch*3, COMPONENTS]
    memory: np.ndarray  # [N, h, w, COMPONENTS]
    scale: np.ndarray  # [h, w] typical normal distance per cell
    normal_scores: np.ndarray  # leave-one-out scores of the normal training images


def fit(normal: np.ndarray, g: Geometry = DEFAULT_GEOMETRY, progress=None) -> Fitted:
    """normal: float32 [N, S, S, 3]."""
    tf = _tf()
    images = tf.constant(normal)
    cut = patches(images, g)
    flat = cut.numpy().reshape(-1, cut.shape[-1])
    rng = np.random.default_rng(0)
    sample = flat[rng.choice(len(flat), size=min(len(flat), 40000), replace=False)]
    mean = sample.mean(0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    components = vt[:COMPONENTS].T.astype(np.float32)
    memory = patch_features(images, mean.astype(np.float32), components, g).numpy()
    # Leave-one-out: each normal image against the others, to learn the normal spread per cell.
    loo = []
    for i in range(len(memory)):
        others = np.delete(memory, i, axis=0)
        loo.append(nearest_distance(tf.constant(memory[i : i + 1]), tf.constant(others), g).numpy()[0])
        if progress:
            progress(i + 1, len(memory))
    loo = np.stack(loo)
    scale = (np.mean(loo, axis=0) + np.median(loo)).astype(np.float32)
    normal_scores = np.array([float(smooth(tf.constant((m / scale)[None])).numpy().max()) for m in loo])
    return Fitted(g, mean.astype(np.float32), components, memory.astype(np.float32), scale, normal_scores)


class Scorer:
    """The exportable detector: images [B, S, S, 3] float32 -> score [B], anomaly_map [B, h, w]."""

    def __init__(self, fitted: Fitted) -> None:
        tf = _tf()
        g = fitted.geometry

        class Module(tf.Module):
            def __init__(self) -> None:
                super().__init__()
                self.mean = tf.Variable(fitted.mean, trainable=False)
                self.components = tf.Variable(fitted.components, trainable=False)
                self.memory = tf.Variable(fitted.memory, trainable=False)
                self.scale = tf.Variable(fitted.scale, trainable=False)
                self.memory_sq = tf.Variable((fitted.memory**2).sum(-1), trainable=False)

            @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
            def serve(self, images):
                features = patch_features(images, self.mean, self.components, g)
                maps = smooth(nearest_distance(features, self.memory, g, self.memory_sq) / self.scale)
                return {"score": tf.reduce_max(maps, axis=[1, 2]), "anomaly_map": maps}

        self.module = Module()

    def score(self, images: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
        tf = _tf()
        scores, maps = [], []
        for start in range(0, len(images), batch):
            out = self.module.serve(tf.constant(images[start : start + batch]))
            scores.append(out["score"].numpy())
            maps.append(out["anomaly_map"].numpy())
        return np.concatenate(scores), np.concatenate(maps)

    def export(self, path: Path) -> Path:
        tf = _tf()
        tf.saved_model.save(self.module, str(path), signatures={"serving_default": self.module.serve})
        return path


def choose_threshold(normal_scores: np.ndarray, anomaly_scores: np.ndarray) -> float:
    """The cut that best separates the calibration scores (max F1; ties: the widest margin)."""
    candidates = np.unique(np.concatenate([normal_scores, anomaly_scores]))
    if len(anomaly_scores) == 0:
        return float(normal_scores.max() * 1.1)
    best, best_key = float(candidates[0]), (-1.0, -1.0)
    for i in range(len(candidates)):
        t = (candidates[i] + candidates[i + 1]) / 2 if i + 1 < len(candidates) else candidates[i] * 1.05
        tp = float((anomaly_scores >= t).sum())
        fp = float((normal_scores >= t).sum())
        fn = float((anomaly_scores < t).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        margin = min(abs(np.concatenate([normal_scores, anomaly_scores]) - t))
        if (f1, margin) > best_key:
            best, best_key = float(t), (f1, margin)
    return best
