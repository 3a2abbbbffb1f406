"""`sagestack build music_transformer [--weights W]`: the served model directory.

Copies the trained weights (the committed models/music_transformer/weights/music_transformer.pt by
default) to <out>/1/model.pt with metadata naming the music runtime, and the handlers with the
torch-free modules they need (tokenizer, parameters, piano roll, synth) to <out>/code/.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from models.music_transformer.commands import DEFAULT_WEIGHTS
from models.music_transformer.samples import samples
from server import modeldir

HERE = Path(__file__).parent
LIB = [
    HERE / "tokens.py",
    HERE / "params.py",
    HERE / "pianoroll.py",
    HERE / "synth.py",
]  # torch-free, shipped as code/lib/music_transformer


def export(weights: Path, out: Path, version: int = 1) -> Path:
    if not weights.is_file():
        raise SystemExit(f"no weights at {weights}: train them with `sagestack music train`")
    version_dir = modeldir.fresh_version(out, version)
    shutil.copy(weights, version_dir / "model.pt")
    meta = {"runtime": "music_transformer", "framework": "pytorch", "artifact": "model.pt", "compiled": False}
    modeldir.write_metadata(version_dir, meta)
    modeldir.export_code(out, "music_transformer", HERE / "serving" / "inference.py", LIB, samples=samples())
    return version_dir


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="build the music transformer's model directory")
    p.add_argument("--out", type=Path, default=Path("build/model/music_transformer"))
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    args = p.parse_args(argv)
    print(f"wrote {export(args.weights, args.out)}")


if __name__ == "__main__":
    main()
