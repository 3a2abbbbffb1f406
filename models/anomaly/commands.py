"""`sagestack anomaly make-dataset|train|bench`: Lookout-for-Vision-style data and training (TF imported on use)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_anomaly(args: argparse.Namespace) -> int:
    if args.action == "make-dataset":
        from models.anomaly.generate import make_dataset

        manifest = make_dataset(args.out, args.normal, args.anomaly, args.seed, args.test_normal, args.test_anomaly)
        print(f"wrote {len(manifest)} images to {args.out} (kinds in {args.out / 'manifest.json'})")
        return 0
    if args.action == "bench":
        from models.anomaly.bench import run

        run(args)
        return 0
    from models.anomaly.train import main as train_main

    train_main([str(args.dataset), *args.extra])
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("anomaly", help="Lookout-style anomaly detection").add_subparsers(dest="action", required=True)
    am = a.add_parser("make-dataset", help="generate PCB images: OUT/normal, OUT/anomaly (+ OUT/test/...)")
    am.add_argument("out", type=Path)
    am.add_argument("--normal", type=int, default=60)
    am.add_argument("--anomaly", type=int, default=40)
    am.add_argument("--test-normal", type=int, default=0)
    am.add_argument("--test-anomaly", type=int, default=0)
    am.add_argument("--seed", type=int, default=7)
    at = a.add_parser("train", help="train on DATASET (normal/, anomaly/, optional test/) and export the model")
    at.add_argument("dataset", type=Path)
    at.add_argument("extra", nargs=argparse.REMAINDER, help="--out, --reports, --roi X Y W H, --version, --fast")
    ab = a.add_parser("bench", help="train and test on the PCB generator and real surfaces (build/bench/anomaly.json)")
    from models.anomaly.bench import add_arguments

    add_arguments(ab)
    for parser in (am, at, ab):
        parser.set_defaults(fn=cmd_anomaly)
