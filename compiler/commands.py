"""`sagestack compile`: SageMaker Neo's compilation job (torch and the backends imported on use)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compiler.evaluation import EVALUATIONS


def cmd_compile(args: argparse.Namespace) -> int:
    from compiler.job import Tuning, compile_model
    from server.cli import settings_or_exit

    try:
        shape = json.loads(args.input_shape)
        backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
        tuning = Tuning(args.tune_trials, args.trials_per_task, root=settings_or_exit().tuning_dir)
        compile_model(args.model_tar, args.framework, shape, args.target, args.out, args.runs, backends, tuning,
                      precision=args.precision, calibration=args.calibration, evaluate=args.evaluate,
                      keep_candidates=args.keep_candidates)  # fmt: skip
    except (ValueError, RuntimeError) as exc:
        raise SystemExit(f"sagestack compile: {exc}") from None
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compile", help="Neo-style compilation of a traced model.tar.gz")
    c.add_argument("model_tar", type=Path)
    c.add_argument("--framework", default="pytorch")
    c.add_argument("--input-shape", required=True, help="e.g. '{\"input0\": [1, 3, 416, 416]}'")
    c.add_argument("--target", default="this_machine", help="ml_c5, ml_m5, ml_c6i, ... or this_machine")
    c.add_argument("--out", type=Path, required=True, help="model base directory for the compiled model")
    c.add_argument("--runs", type=int, default=10, help="timed runs per backend")
    c.add_argument("--backends", default="tvm,onnxruntime,openvino", help="candidates; the fastest passing wins")
    c.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials to add to the target's database")
    c.add_argument("--trials-per-task", type=int, default=64, help="MetaSchedule trials per task (this run)")
    c.add_argument("--precision", default="fp32",
                   help="fp32 (default), bf16 (OpenVINO, where the CPU has it), int8 (OpenVINO, ONNX Runtime), or "
                        "several comma-separated: each is a candidate")  # fmt: skip
    c.add_argument("--calibration", type=Path, help="a folder of images to calibrate int8 on (default: views of "
                   "the photos scikit-learn and matplotlib ship)")  # fmt: skip
    c.add_argument("--evaluate", choices=sorted(EVALUATIONS),
                   help="also score each candidate against the uncompiled model on real photos; a reduced "
                        "precision must pass the score's bar to be picked")  # fmt: skip
    c.add_argument(
        "--keep-candidates",
        action="store_true",
        help="keep every candidate's artifact beside the picked one (default: only the picked one)",
    )
    c.set_defaults(fn=cmd_compile)
