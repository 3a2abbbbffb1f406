"""The model artifact as SageMaker Neo receives it: model.tar.gz holding a traced TorchScript .pth."""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

from server.model_archive import unpack


def pack_model_tar(traced, path: Path) -> Path:
    """A traced module as model.tar.gz holding model.pth, as SageMaker Neo's PyTorch sample packs it."""
    import torch

    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("model.pth")
        info.size = buf.tell()
        buf.seek(0)
        tar.addfile(info, buf)
    return path


def load_traced(artifact: Path):
    """The TorchScript module in model.tar.gz (or a bare .pt/.pth file), on CPU, in eval mode."""
    import torch

    if not artifact.name.endswith(".tar.gz"):
        return torch.jit.load(str(artifact), map_location="cpu").eval()
    with tempfile.TemporaryDirectory() as tmp:
        unpack(artifact, Path(tmp))  # checked member by member (Python 3.11.2, the image's, has no tar filters)
        found = sorted(Path(tmp).rglob("*.pt*"))
        if not found:
            raise ValueError(f"{artifact} holds no .pth/.pt TorchScript model")
        return torch.jit.load(str(found[0]), map_location="cpu").eval()
