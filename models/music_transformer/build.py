"""`sagestack build music_transformer [--weights W]`: the served model directory.

Copies the trained weights (the committed models/music_transformer/weights/music_transformer.pt by
default) to <out>/1/model.pt with metadata naming the music runtime, and the handlers with the
torch-free modules they need (tokenizer, parameters, piano roll) to <out>/code/.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from models.music_transformer.commands import DEFAULT_WEIGHTS

HERE = Path(__file__).parent
LIB = {"tokens.py": "music_tokens.py", "params.py": "music_params.py", "pianoroll.py": "music_pianoroll.py"}


def export(weights: Path, out: Path, version: int = 1) -> Path:
    if not weights.is_file():
        raise SystemExit(f"no weights at {weights}: train them with `sagestack music train`")
    version_dir = out / str(version)
    shutil.rmtree(version_dir, ignore_errors=True)
    (version_dir / "compiled").mkdir(parents=True)
    shutil.copy(weights, version_dir / "model.pt")
    meta = {"runtime": "music_transformer", "framework": "pytorch", "artifact": "model.pt", "compiled": False}
    (version_dir / "compiled" / "metadata.json").write_text(json.dumps(meta, indent=1))
    code = out / "code"
    shutil.rmtree(code, ignore_errors=True)
    (code / "lib").mkdir(parents=True)
    shutil.copy(HERE / "serving" / "inference.py", code / "inference.py")
    for source, name in LIB.items():
        shutil.copy(HERE / source, code / "lib" / name)
    return version_dir


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="build the music transformer's model directory")
    p.add_argument("--out", type=Path, default=Path("build/model/music_transformer"))
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    args = p.parse_args(argv)
    print(f"wrote {export(args.weights, args.out)}")


if __name__ == "__main__":
    main()
