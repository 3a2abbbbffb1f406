"""Quick Model (a random forest, as Data Wrangler's) and the served classifier (a TF SavedModel).

The classifier is an L2-regularised logistic regression over the prepared features, trained with
TensorFlow and exported with one `serving_default` signature: `features` float32 [batch, F] ->
`probability_high_risk` float32 [batch]. Its decision threshold maximises F1 on the training split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import train_test_split

SEED = 42
TEST_SIZE = 0.2


@dataclass
class Split:
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    features: list[str]


def split(prepared: pd.DataFrame, target: str, seed: int = SEED) -> Split:
    """A stratified held-out split with a fixed seed."""
    features = [c for c in prepared.columns if c != target]
    x = prepared[features].to_numpy(dtype=np.float32)
    y = prepared[target].to_numpy(dtype=np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_SIZE, stratify=y, random_state=seed)
    return Split(x_tr, x_te, y_tr, y_te, features)


def quick_model(data: Split, seed: int = SEED) -> dict:
    """Data Wrangler's Quick Model: a random forest, its held-out F1 and feature importances."""
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1)
    forest.fit(data.x_train, data.y_train)
    f1 = f1_score(data.y_test, forest.predict(data.x_test))
    importance = dict(zip(data.features, forest.feature_importances_.round(6).tolist(), strict=True))
    ranked = dict(sorted(importance.items(), key=lambda kv: -kv[1]))
    return {"f1": float(f1), "importance": ranked}


def train_classifier(data: Split, seed: int = SEED, steps: int = 600, l2: float = 1e-3):
    """Full-batch Adam on the logistic loss; returns (weights, bias, threshold)."""
    import tensorflow as tf

    tf.random.set_seed(seed)
    x = tf.constant(data.x_train)
    y = tf.constant(data.y_train.astype(np.float32))
    w = tf.Variable(tf.zeros([x.shape[1]]))
    b = tf.Variable(float(np.log(y.numpy().mean() / (1 - y.numpy().mean()))))
    opt = tf.keras.optimizers.Adam(0.05)

    @tf.function
    def step() -> None:
        with tf.GradientTape() as tape:
            logits = tf.linalg.matvec(x, w) + b
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits))
            loss += l2 * tf.reduce_sum(w * w)
        opt.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b], strict=True))

    for _ in range(steps):
        step()
    train_p = tf.sigmoid(tf.linalg.matvec(x, w) + b).numpy()
    thresholds = np.linspace(0.2, 0.8, 61)
    threshold = float(max(thresholds, key=lambda t: f1_score(data.y_train, train_p >= t)))
    return w.numpy(), float(b.numpy()), threshold


def evaluate(weights: np.ndarray, bias: float, threshold: float, data: Split) -> dict:
    logits = data.x_test @ weights + bias
    p = 1 / (1 + np.exp(-logits))
    return {
        "roc_auc": float(roc_auc_score(data.y_test, p)),
        "f1": float(f1_score(data.y_test, p >= threshold)),
        "threshold": threshold,
        "n_train": len(data.y_train),
        "n_test": len(data.y_test),
    }


def export_saved_model(weights: np.ndarray, bias: float, path: Path) -> Path:
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(weights.astype(np.float32))
            self.b = tf.Variable(np.float32(bias))

        @tf.function(input_signature=[tf.TensorSpec([None, len(weights)], tf.float32, name="features")])
        def serve(self, features):
            return {"probability_high_risk": tf.sigmoid(tf.linalg.matvec(features, self.w) + self.b)}

    scorer = Scorer()
    tf.saved_model.save(scorer, str(path), signatures={"serving_default": scorer.serve})
    return path
