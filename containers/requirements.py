"""The image's pip inputs, read from pyproject.toml (the one place they are pinned).

Runs with a bare python3 (the image's build stages, before anything is installed):
- `serving --cpu|--gpu`: what the served paths import, `dependencies` plus the `pytorch` extra. --cpu pins
  torch's CPU build (`+cpu`), so pip can never take PyPI's multi-GB CUDA wheel; --gpu takes TensorFlow's CUDA
  wheel and PyPI's (CUDA) torch.
- `serving-no-deps`: installed with --no-deps (the TF Serving protos without the full `tensorflow` wheel).
- `build-tools`: the build backends an offline build needs (ours, and those of pins that ship only as source).
- `pip-source WHEELHOUSE TORCH_INDEX_URL`: pip's index options. A wheelhouse with files in it (`make image`
  fills build/wheelhouse with the host's own pip) means a build that reaches no index at all; an empty one
  means PyPI plus TORCH_INDEX_URL, PyTorch's CPU index by default.
"""

import sys
import tomllib
from pathlib import Path


def serving(variant: str) -> list[str]:
    with open("pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["pytorch"]
    if variant == "--gpu":
        return [d.replace("tensorflow-cpu==", "tensorflow[and-cuda]==") for d in deps]
    return [f"{d}+cpu" if d.startswith("torch==") else d for d in deps]


def sagestack_table(key: str) -> list[str]:
    with open("pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["sagestack"][key]


def pip_source(wheelhouse: str, torch_index: str) -> list[str]:
    if Path(wheelhouse).is_dir() and any(Path(wheelhouse).iterdir()):
        return ["--no-index", "--find-links", wheelhouse]
    return ["--extra-index-url", torch_index] if torch_index else []


def main(argv: list[str]) -> None:
    what = argv[0]
    if what == "serving":
        lines = serving(argv[1] if len(argv) > 1 else "--cpu")
    elif what in ("serving-no-deps", "build-tools"):
        lines = sagestack_table(what)
    elif what == "pip-source":
        lines = [" ".join(pip_source(argv[1], argv[2] if len(argv) > 2 else ""))]
    else:
        raise SystemExit(f"requirements.py: unknown {what!r} (serving, serving-no-deps, build-tools, pip-source)")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
