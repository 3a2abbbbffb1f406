"""`sagestack build yolov4 [--arch yolov4-tiny] [--cfg F --weights W --names N]`: the uncompiled model artifact.

Random weights from a fixed seed by default (none can be downloaded here), or Darknet weights for any
YOLOv4-family cfg (the published yolov4 and yolov4-tiny, or a custom class count, named by --names; the
class count and input size come from the cfg). The network is traced with TorchScript and packed as
model.tar.gz holding model.pth, as SageMaker Neo's PyTorch sample packs it, so a user's own traced model
takes the same path. The handlers (letterbox, decode, class-wise NMS) and the class names go to <out>/code/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compiler.artifact import pack_model_tar
from models.yolov4 import darknet
from models.yolov4.coco import CLASSES
from models.yolov4.network import ARCHS, Candidates, Darknet, build
from models.yolov4.samples import samples
from server import modeldir

HERE = Path(__file__).parent


def export(out: Path, model: Darknet, size: int, version: int = 1, names: list[str] | None = None) -> Path:
    """Trace the network with its per-box class and score (`Candidates`) and pack it with the handlers;
    `names` (one per class, default COCO's 80) go to the handlers' config."""
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
    code = modeldir.export_code(out, "yolov4", HERE / "serving" / "inference.py", [HERE / "boxes.py", HERE / "coco.py"],
                                samples=samples())  # fmt: skip
    config = {"input_size": size} | ({"names": names} if names else {})
    (code / "config.json").write_text(json.dumps(config, indent=1))
    return version_dir


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="build the YOLOv4 TorchScript artifact")
    p.add_argument("--out", type=Path, default=Path("build/model/yolov4"))
    p.add_argument("--size", type=int, default=416)
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier (< 1 for reduced models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", choices=sorted(ARCHS), default="yolov4", help="the network our cfg writer lays out")
    p.add_argument("--weights", type=Path, help="Darknet .weights (the published yolov4 or yolov4-tiny weights)")
    p.add_argument("--cfg", type=Path, help="any YOLOv4-family Darknet .cfg (default: ours for --arch)")
    p.add_argument("--names", type=Path, help="class names, one a line, as many as the cfg's classes (default: COCO)")
    args = p.parse_args(argv)
    if args.cfg:
        model = Darknet(args.cfg.read_text())
    elif args.weights:
        model = Darknet(ARCHS[args.arch](size=args.size))
    else:
        model = build(width=args.width, size=args.size, seed=args.seed, arch=args.arch)
    if args.weights:
        _, blocks = darknet.read_weights(args.weights.read_bytes(), model.specs)
        model.load_darknet(blocks)
    try:
        names = class_names(model, args.names)
    except ValueError as exc:
        raise SystemExit(f"sagestack build yolov4: {exc}") from None
    size = model.input_size
    print(f"[yolov4] tracing {sum(p.numel() for p in model.parameters()):,} parameters at {size}", file=sys.stderr)
    print(f"built {export(args.out, model, size, names=names)}")


def class_names(model: Darknet, names_file: Path | None) -> list[str] | None:
    """The class names for the handlers: the --names file's lines, which must number the cfg's classes (its
    [yolo] sections say how many); None for COCO's 80 when no file is given."""
    counts = {int(b["classes"]) for b in model.blocks if b["type"] == "yolo"}
    if len(counts) != 1:
        raise ValueError(f"the cfg's [yolo] sections disagree on classes: {sorted(counts)}")
    (classes,) = counts
    if names_file is None:
        if classes != len(CLASSES):
            raise ValueError(f"the cfg has {classes} classes: give their names with --names")
        return None
    names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    if len(names) != classes:
        raise ValueError(f"{names_file} names {len(names)} classes; the cfg has {classes}")
    return names


if __name__ == "__main__":
    main()
