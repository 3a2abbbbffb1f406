"""`sagestack build anomaly`: the reference data set (generated, seed 7), then training and export.

20 normal + 10 anomalous training images and a 50 + 50 test set, as the quality target asks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.anomaly.generate import make_dataset
from models.anomaly.train import main as train_main


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="generate the PCB data set and train the anomaly model")
    p.add_argument("--out", type=Path, default=Path("build/model/anomaly"))
    p.add_argument("--data", type=Path, default=Path("build/data/anomaly"))
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    if not (args.data / "manifest.json").exists():
        make_dataset(args.data, 20, 10, args.seed, test_normal=50, test_anomaly=50)
    train_main([str(args.data), "--out", str(args.out)])


if __name__ == "__main__":
    main()
