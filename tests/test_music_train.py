"""Training and evaluation with a tiny config on a few chorales; the shipped weights' provenance."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import torch

from models.music_transformer.model import Config, MusicTransformer
from models.music_transformer.tokens import PAD, START
from models.music_transformer.train import evaluate_stream, windows

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "models" / "music_transformer" / "weights"


def sagestack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_windows_score_every_target_once():
    stream = torch.arange(2, 2 + 1000) % 300 + 2
    rows, score_from = windows(stream, 64)
    scored = []
    for row, start in zip(rows, score_from, strict=True):
        targets = row[1:][int(start) :]
        scored += [int(t) for t in targets if t != PAD]
    assert scored == stream[1:].tolist()


def test_evaluation_counts_tokens_but_not_starts():
    model = MusicTransformer(Config.tiny()).eval()
    stream = torch.tensor([START, 50, 60, 250, START, 51, 61, 250, 70])
    nll, count = evaluate_stream(model, stream)
    assert count == 7 and 0 < nll < 10  # 8 targets, one of them <S>


def test_train_resume_and_evaluate(tmp_path):
    common = ["--config", "tiny", "--limit", "12", "--out", str(tmp_path / "run"), "--export", str(tmp_path / "w.pt")]
    first = sagestack("music", "train", "--steps", "6", "--eval-every", "3", "--batch", "4", *common)
    assert first.returncode == 0, first.stderr
    assert "step 6/6" in first.stderr and "val NLL" in first.stderr  # progress is shown
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    second = sagestack("music", "train", "--steps", "9", "--eval-every", "3", "--batch", "4", "--resume", *common)
    assert second.returncode == 0, second.stderr
    assert "resumed at step 6" in second.stderr and "step 9/9" in second.stderr
    history = json.loads((tmp_path / "run" / "train.json").read_text())["history"]
    assert [h["step"] for h in history] == [3, 6, 9]
    metrics_path = tmp_path / "metrics.json"
    ev = sagestack(
        "music", "evaluate", "--weights", str(tmp_path / "w.pt"), "--out", str(metrics_path), "--limit", "12"
    )
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(metrics_path.read_text())
    assert set(metrics) >= {"val_nll", "test_nll", "n_test_tokens"} and metrics["n_test_tokens"] > 0
    assert 0 < metrics["test_nll"] < 10


def test_shipped_weights_match_their_record():
    record = json.loads((WEIGHTS / "music_transformer.json").read_text())
    blob = (WEIGHTS / "music_transformer.pt").read_bytes()
    assert len(blob) <= 20 * 2**20
    assert hashlib.sha256(blob).hexdigest() == record["sha256"]
    assert record["command"].startswith("sagestack music train") and "--seed" in record["command"]
