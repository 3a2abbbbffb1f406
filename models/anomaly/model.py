"""A few-shot anomaly detector that learns "normal" from a few images, with no pretrained weights.

Four feature branches look at different things; each keeps its own memory of normal cells and its own notion of
how far normal images typically get from it:
- **placed**: per-channel normalised 8x8 patches every `stride` px, projected on the normal patches' principal
  components, compared with the memory cell at nearly the same place (+-`radius` cells). This is a product
  photographed in place: it notices a component missing from its spot.
- **ridge**: a bank of thin, elongated ridge filters (8 orientations); per cell the strongest bright and dark line.
  Scratches and cracks on a texture.
- **colour**: the cell's mean chroma (R-G, G-B). Stains and discolouration.
- **tone**: the luminance's local mean and contrast, and the gradient energy, over twice the patch. Holes and dents.
The last three compare with a memory sampled from all normal cells, at any place: a texture has no fixed layout.

A branch's map is smoothed and turned into a z-score of the normal images' leave-out maxima, so every branch speaks
in the same units; the anomaly map is the largest branch's z per cell, and the image score its maximum. All branches
run on one cell grid (patch 8 every `cell` px) in one TF graph, so training-time evaluation and serving run the same
computation. `Geometry.fast()` (a coarser grid, smaller memories) trades accuracy for ~6x less compute, for tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COMPONENTS = 16
BRANCHES = ("placed", "ridge", "colour", "tone")
FOLDS = 5  # the free branches' leave-out calibration: memory from 4/5 of the normal images, scored on the rest
BOOTSTRAP = 200  # resamples of the calibration images for the threshold
CHUNK = 1024  # cells per nearest-neighbour step (bounds the distance matrix's memory)
RIDGE = {"across": 1.2, "along": 6.0, "orientations": 8, "size": 31}  # sigma in px: 2-3 px lines, ~30 px long


@dataclass(frozen=True)
class Geometry:
    patch: int = 8
    stride: int = 2  # the placed branch's patch step, px
    radius: int = 4  # the placed branch's search, cells
    cell: int = 4  # every branch's output grid step, px (a multiple of stride)
    memory: int = 16000  # normal cells each free branch keeps

    def __post_init__(self) -> None:
        if self.cell < self.stride or self.cell % self.stride:
            raise ValueError(f"the grid step {self.cell} px must be a multiple of the placed stride {self.stride} px")

    @classmethod
    def fast(cls) -> Geometry:
        return cls(8, 4, 2, 8, 4000)


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
    """The placed branch's features: [B, H, W, 3] -> [B, h, w, COMPONENTS]."""
    tf = _tf()
    return tf.tensordot(patches(images, g) - mean, components, axes=1)


def _luminance(images):
    """Per-image normalised grey level, [B, H, W, 1]: lighting gain and offset drop out."""
    tf = _tf()
    mu, var = tf.nn.moments(images, axes=[1, 2, 3], keepdims=True)
    return tf.reduce_mean((images - mu) / tf.sqrt(var + 1.0), -1, keepdims=True)


def ridge_kernels() -> np.ndarray:
    """Minus the second derivative across an elongated Gaussian, at each orientation: [size, size, 1, n]."""
    r, n = RIDGE["size"] // 2, RIDGE["orientations"]
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    kernels = []
    for a in np.pi * np.arange(n) / n:
        along, across = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
        s2 = RIDGE["across"] ** 2
        k = (1 / s2 - across**2 / s2**2) * np.exp(-(along**2) / (2 * RIDGE["along"] ** 2) - across**2 / (2 * s2))
        k -= k.mean()  # flat regions and ramps answer 0
        kernels.append(k / np.abs(k).sum())
    return np.stack(kernels, -1)[:, :, None, :].astype(np.float32)


def free_features(branch: str, images, g: Geometry, ridge=None):
    """A free branch's features on the cell grid: [B, H, W, 3] -> [B, h, w, D]."""
    tf = _tf()
    p, s = g.patch, g.cell
    if branch == "colour":
        chroma = tf.stack([images[..., 0] - images[..., 1], images[..., 1] - images[..., 2]], -1)
        return tf.nn.avg_pool2d(chroma, p, s, "VALID")
    y = _luminance(images)
    if branch == "ridge":
        r = tf.nn.conv2d(y, ridge, 1, "SAME")
        return tf.concat([tf.nn.max_pool2d(r, p, s, "VALID"), tf.nn.max_pool2d(-r, p, s, "VALID")], -1)
    if branch == "tone":  # a window twice the patch's, on the same centres
        gy, gx = tf.image.image_gradients(y)
        half = p // 2
        pad = lambda t: tf.pad(t, [[0, 0], [half, half], [half, half], [0, 0]], mode="SYMMETRIC")  # noqa: E731
        mean = tf.nn.avg_pool2d(pad(y), 2 * p, s, "VALID")
        contrast = tf.sqrt(tf.maximum(tf.nn.avg_pool2d(pad(y * y), 2 * p, s, "VALID") - mean * mean, 0.0))
        gradient = tf.nn.avg_pool2d(pad(tf.sqrt(gx * gx + gy * gy)), 2 * p, s, "VALID")
        return tf.concat([mean, contrast, gradient], -1)
    raise ValueError(f"branch {branch!r}")


def nearest_placed(features, memory, g: Geometry, memory_sq=None):
    """Per cell, the distance to the closest memory cell within +-radius cells. [B,h,w,D],[N,h,w,D] -> [B,h,w].

    The (small) feature map is shifted instead of the (large) memory, so each offset reads the
    memory once and copies nothing: this is memory-bandwidth bound.
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


def nearest_free(features, memory):
    """Per cell, the distance to the closest memory cell anywhere. [B,h,w,D],[N,D] -> [B,h,w]."""
    tf = _tf()
    shape = tf.shape(features)
    flat = tf.reshape(features, [-1, shape[-1]])
    n = tf.shape(flat)[0]
    flat = tf.pad(flat, [[0, (-n) % CHUNK], [0, 0]])
    m2 = tf.reduce_sum(memory * memory, -1)

    def closest(rows):
        d = tf.reduce_sum(rows * rows, -1)[:, None] + m2[None] - 2.0 * tf.matmul(rows, memory, transpose_b=True)
        return tf.reduce_min(d, axis=1)

    d = tf.map_fn(
        closest, tf.reshape(flat, [-1, CHUNK, shape[-1]]), fn_output_signature=tf.TensorSpec([CHUNK], tf.float32)
    )
    return tf.sqrt(tf.maximum(tf.reshape(tf.reshape(d, [-1])[:n], shape[:3]), 0.0))


def smooth(maps):
    tf = _tf()
    return tf.nn.avg_pool2d(maps[..., None], 3, 1, "SAME")[..., 0]


def to_grid(maps, g: Geometry):
    """The placed branch's map (every `stride` px) onto the common grid (every `cell` px), keeping peaks."""
    tf = _tf()
    k = g.cell // g.stride
    return maps if k == 1 else tf.nn.max_pool2d(maps[..., None], k, k, "SAME")[..., 0]


@dataclass
class Fitted:
    geometry: Geometry
    size: int  # the square input's side, px: the served signature takes exactly this
    mean: np.ndarray  # placed: [patch*patch*3]
    components: np.ndarray  # placed: [patch*patch*3, COMPONENTS]
    memory: np.ndarray  # placed: [N, h, w, COMPONENTS]
    scale: np.ndarray  # placed: [h, w] typical normal distance per cell
    free_memory: dict[str, np.ndarray]  # free branch -> [cells, D]
    z: dict[str, tuple[float, float]]  # branch -> (mean, sd) of the normal images' leave-out maxima
    normal_scores: np.ndarray  # leave-out scores of the normal training images


def _batched(fn: Callable, images: np.ndarray, batch: int = 8) -> np.ndarray:
    tf = _tf()
    return np.concatenate([fn(tf.constant(images[s : s + batch])).numpy() for s in range(0, len(images), batch)])


def _fit_placed(normal: np.ndarray, g: Geometry, progress) -> tuple[np.ndarray, ...]:
    """The PCA basis, the memory, the per-cell scale, and the leave-one-out distance maps divided by that scale."""
    tf = _tf()
    cut = _batched(lambda x: patches(x, g), normal)
    flat = cut.reshape(-1, cut.shape[-1])
    rng = np.random.default_rng(0)
    sample = flat[rng.choice(len(flat), size=min(len(flat), 40000), replace=False)]
    mean = sample.mean(0).astype(np.float32)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    components = vt[:COMPONENTS].T.astype(np.float32)
    memory = _batched(lambda x: patch_features(x, mean, components, g), normal)
    loo = []
    for i in range(len(memory)):
        others = np.delete(memory, i, axis=0)
        loo.append(nearest_placed(tf.constant(memory[i : i + 1]), tf.constant(others), g).numpy()[0])
        progress(i + 1)
    loo = np.stack(loo)
    scale = (np.mean(loo, axis=0) + np.median(loo)).astype(np.float32)
    return mean, components, memory, scale, loo / scale


def _fit_free(branch: str, normal: np.ndarray, g: Geometry, ridge) -> tuple[np.ndarray, np.ndarray]:
    """A free branch's memory, and its leave-out maps (FOLDS folds, each scored against the others' memory)."""
    tf = _tf()
    feats = _batched(lambda x: free_features(branch, x, g, ridge), normal)
    n, h, w, d = feats.shape
    rng = np.random.default_rng(0)

    def memory(images: np.ndarray) -> np.ndarray:
        cells = feats[images].reshape(-1, d)
        size = int(g.memory * len(images) / n)
        return cells if size >= len(cells) else cells[rng.choice(len(cells), size, replace=False)]

    order = rng.permutation(n)
    loo = np.zeros((n, h, w), np.float32)
    for fold in range(min(FOLDS, n)):
        held = order[fold::FOLDS]
        kept = tf.constant(memory(np.setdiff1d(order, held)))
        loo[held] = nearest_free(tf.constant(feats[held]), kept).numpy()
    return memory(np.arange(n)), loo


def fit(normal: np.ndarray, g: Geometry = DEFAULT_GEOMETRY, progress=None) -> Fitted:
    """normal: float32 [N, S, S, 3]. `progress(done, total)` hears each leave-out step."""
    tf = _tf()
    total = len(normal) + len(BRANCHES) - 1
    step = (lambda i: progress(i, total)) if progress else (lambda i: None)
    mean, components, memory, scale, placed_loo = _fit_placed(normal, g, step)
    maps = {"placed": to_grid(smooth(tf.constant(placed_loo)), g).numpy()}
    ridge = tf.constant(ridge_kernels())
    free_memory = {}
    for i, branch in enumerate(BRANCHES[1:]):
        free_memory[branch], loo = _fit_free(branch, normal, g, ridge)
        maps[branch] = smooth(tf.constant(loo)).numpy()
        step(len(normal) + i + 1)
    maxima = {b: m.max(axis=(1, 2)) for b, m in maps.items()}
    z = {b: (float(v.mean()), float(v.std() + 1e-6)) for b, v in maxima.items()}
    scores = np.max([(maxima[b] - z[b][0]) / z[b][1] for b in BRANCHES], axis=0)
    return Fitted(g, normal.shape[1], mean, components, memory, scale, free_memory, z, scores)


class Scorer:
    """The exportable detector: images [B, S, S, 3] float32 -> score [B], anomaly_map [B, h, w].

    The signature names S: the graph is only defined for the size it learnt (an image smaller than a patch
    makes some TF kernels divide by zero and kill the model server), so any other size is refused by shape.
    """

    def __init__(self, fitted: Fitted) -> None:
        tf = _tf()
        g = fitted.geometry
        const = lambda v: tf.Variable(v, trainable=False)  # noqa: E731
        images_spec = tf.TensorSpec([None, fitted.size, fitted.size, 3], tf.float32, name="images")

        class Module(tf.Module):
            def __init__(self) -> None:
                super().__init__()
                self.mean, self.components = const(fitted.mean), const(fitted.components)
                self.memory, self.scale = const(fitted.memory), const(fitted.scale)
                self.memory_sq = const((fitted.memory**2).sum(-1))
                self.ridge = const(ridge_kernels())
                self.free_memory = {b: const(m) for b, m in fitted.free_memory.items()}
                self.z = {b: const(np.array(v, np.float32)) for b, v in fitted.z.items()}

            @tf.function(input_signature=[images_spec])
            def serve(self, images):
                features = patch_features(images, self.mean, self.components, g)
                placed = nearest_placed(features, self.memory, g, self.memory_sq) / self.scale
                maps = {"placed": to_grid(smooth(placed), g)}
                for b in BRANCHES[1:]:
                    feats = free_features(b, images, g, self.ridge)
                    maps[b] = smooth(nearest_free(feats, self.free_memory[b]))
                z = [(maps[b] - self.z[b][0]) / self.z[b][1] for b in BRANCHES]
                combined = tf.reduce_max(tf.stack(z), axis=0)
                return {"score": tf.reduce_max(combined, axis=[1, 2]), "anomaly_map": combined}

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


def max_f1_threshold(normal_scores: np.ndarray, anomaly_scores: np.ndarray) -> float:
    """The cut that best separates the calibration scores (max F1; ties: the widest margin)."""
    candidates = np.unique(np.concatenate([normal_scores, anomaly_scores]))
    beyond = float(np.std(normal_scores)) or 1.0
    if len(anomaly_scores) == 0:
        return float(normal_scores.max() + beyond)
    best, best_key = float(candidates[0]), (-1.0, -1.0)
    for i in range(len(candidates)):
        t = (candidates[i] + candidates[i + 1]) / 2 if i + 1 < len(candidates) else candidates[i] + beyond
        tp = float((anomaly_scores >= t).sum())
        fp = float((normal_scores >= t).sum())
        fn = float((anomaly_scores < t).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        margin = min(abs(np.concatenate([normal_scores, anomaly_scores]) - t))
        if (f1, margin) > best_key:
            best, best_key = float(t), (f1, margin)
    return best


def choose_threshold(normal_scores: np.ndarray, anomaly_scores: np.ndarray) -> float:
    """The max-F1 cut without the highest normal and the lowest anomalous calibration score (each side trimmed when it
    has 3 or more, the normal side only when there are anomalies): the plain max-F1 cut goes wherever its most
    extreme image says, so one stray normal image or one anomaly that looks normal would move it by itself."""
    trim = len(normal_scores) >= 3 and len(anomaly_scores) > 0
    normal = np.sort(normal_scores)[:-1] if trim else normal_scores
    anomalous = np.sort(anomaly_scores)[1:] if len(anomaly_scores) >= 3 else anomaly_scores
    return max_f1_threshold(normal, anomalous)


def bootstrap_thresholds(normal_scores: np.ndarray, anomaly_scores: np.ndarray, n: int = BOOTSTRAP) -> np.ndarray:
    """choose_threshold on each of `n` resamples (with replacement) of the calibration images: how stable it is."""
    rng = np.random.default_rng(0)
    resample = lambda s: rng.choice(s, len(s))  # noqa: E731
    return np.array([choose_threshold(resample(normal_scores), resample(anomaly_scores)) for _ in range(n)])
