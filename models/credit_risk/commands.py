"""`sagestack flow preview|run|export`: Data-Wrangler-style prep flows (pandas imported on use)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_flow(args: argparse.Namespace) -> int:
    from models.credit_risk import flow

    try:
        if args.action == "preview":
            import pandas as pd

            with pd.option_context("display.max_columns", 12, "display.width", 160):
                print(flow.preview(args.flow, args.steps, args.rows))
        elif args.action == "run":
            frame = flow.run(args.flow, args.out)
            print(f"wrote {args.out}: {frame.shape[0]} rows x {frame.shape[1]} columns")
        else:
            print(f"wrote {flow.export(args.flow, args.out)}")
    except flow.FlowError as exc:
        raise SystemExit(f"sagestack flow: {exc}") from None
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("flow", help="Data-Wrangler-style prep flows").add_subparsers(dest="action", required=True)
    fp = f.add_parser("preview", help="show the table after the first N steps")
    fp.add_argument("flow", type=Path)
    fp.add_argument("--steps", type=int, required=True)
    fp.add_argument("--rows", type=int, default=10)
    fr = f.add_parser("run", help="fit the flow and run it on the whole data set")
    fr.add_argument("flow", type=Path)
    fr.add_argument("--out", type=Path, required=True, help="x.csv or x.parquet")
    fe = f.add_parser("export", help="write a standalone prep.py that reproduces the fitted flow")
    fe.add_argument("flow", type=Path)
    fe.add_argument("--out", type=Path, required=True)
    for parser in (fp, fr, fe):
        parser.set_defaults(fn=cmd_flow)
