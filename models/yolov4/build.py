"""`sagestack build yolov4 [--weights yolov4.weights --cfg yolov4.cfg]`: the uncompiled model artifact.

Random weights from a fixed seed by default (none can be downloaded here), or the published Darknet
weights. The network is traced with TorchScript and packed as model.tar.gz holding model.pth, as
SageMaker Neo's PyTorch sample packs it, so a user's own traced model takes the same path. The
handlers (letterbox, decode, class-wise NMS) go to <out>/code/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compiler.artifact import pack_model_tar
from models.yolov4 import darknet
from models.yolov4.network import Candidates, Darknet, build, yolov4_cfg
from server import modeldir

HERE = Path(__file__).parent


def export(out: Path, model: Darknet, size: int, version: int = 1) -> Path:
    """Trace the network with its per-box class and score (`Candidates`) and pack it with the handlers."""
    import torch

    example = torch.rand(1, 3, size, size)
    with torch.no_grad():
        traced = torch.jit.trace(Candidates(model.eval()).eval(), example)
    version_dir = modeldir.fresh_version(out, version)
    pack_model_tar(traced, version_dir / "model.tar.gz")
    meta = {
        "runtime": "torchscript",
        "framework": "pytorch",
        "artifact": "model.tar.gz",
        "inputs": {"input0": [1, 3, size, size]},
        "outputs": ["output0"],
        "compiled": False,
    }
    modeldir.write_metadata(version_dir, meta)
    code = modeldir.export_code(out, "yolov4", HERE / "serving" / "inference.py", [HERE / "boxes.py", HERE / "coco.py"])
    (code / "config.json").write_text(json.dumps({"input_size": size}, indent=1))
    return version_dir


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="build the YOLOv4 TorchScript artifact")
    p.add_argument("--out", type=Path, default=Path("build/model/yolov4"))
    p.add_argument("--size", type=int, default=416)
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier (< 1 for reduced models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", type=Path, help="Darknet .weights (the published YOLOv4 weights)")
    p.add_argument("--cfg", type=Path, help="Darknet .cfg for --weights (default: our yolov4.cfg)")
    args = p.parse_args(argv)
    if args.weights:
        cfg_text = args.cfg.read_text() if args.cfg else yolov4_cfg(size=args.size)
        model = Darknet(cfg_text)
        _, blocks = darknet.read_weights(args.weights.read_bytes(), model.specs)
        model.load_darknet(blocks)
    else:
        model = build(width=args.width, size=args.size, seed=args.seed)
    print(f"[yolov4] tracing {sum(p.numel() for p in model.parameters()):,} parameters at {args.size}", file=sys.stderr)
    print(f"built {export(args.out, model, args.size)}")


if __name__ == "__main__":
    main()
