"""`sagestack build <family>`, and each family's own subcommands (its `commands.py`, where it has one)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from pathlib import Path

from models import FAMILIES


def cmd_build(args: argparse.Namespace) -> int:
    from server.cli import settings_or_exit

    out = args.out or settings_or_exit().model_dir / args.model
    importlib.import_module(f"models.{args.model}.build").main(["--out", str(out), *args.extra])
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("build", help="build a model into the model directory")
    b.add_argument("model", choices=sorted(FAMILIES))
    b.add_argument("--out", type=Path, help="model base directory (default: $SAGESTACK_MODEL_DIR/<model>)")
    b.add_argument("extra", nargs=argparse.REMAINDER, help="options passed to the model's builder")
    b.set_defaults(fn=cmd_build)
    for family in FAMILIES:
        name = f"models.{family}.commands"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).add_parsers(sub)
