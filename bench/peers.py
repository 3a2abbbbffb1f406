"""Peer model servers in their own cached virtual environments (KServe pins protobuf<7)."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

VENVS = Path("build/venvs")
# Peer name -> pinned pip requirements of its venv.
PEERS = {
    "kserve": ["kserve==0.21.0", "tensorflow-cpu==2.21.0"],
}


def ensure_venv(name: str) -> Path:
    """The peer's python, creating and installing its venv once (later runs reuse it)."""
    root = VENVS / name
    python = root / "bin" / "python"
    marker = root / ".installed"
    if marker.exists():
        return python
    print(f"[bench] setting up the {name} venv in {root} (once)", file=sys.stderr, flush=True)
    venv.create(root, with_pip=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS[name]], check=True)
    marker.touch()
    return python


def version(python: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version('{package}'))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()
