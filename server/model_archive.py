"""model.tar.gz, SageMaker's model artifact: packed by `sagestack push`, unpacked into /opt/ml/model.

SageMaker unpacks ModelDataUrl into /opt/ml/model before `serve` starts; `sagestack fetch-model` does the
same where nothing else does (a Kubernetes initContainer). The archive holds `<model>/<version>/...` for
each model, so one archive can carry a model with its compiled twin. Unpacking refuses what could write
outside the target: absolute names, `..`, links that point out of it, devices and fifos.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import urlparse


class ArchiveError(ValueError):
    """A model URL or archive that cannot be used; the message names it."""


def pack(model_dir: Path, models: list[str]) -> bytes:
    """A model.tar.gz holding <model>/... for each model, byte-identical for identical files (sorted, zeroed times)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for model in models:
            base = model_dir / model
            if not base.is_dir():
                raise ArchiveError(f"model directory {base} does not exist; build it first (sagestack build {model})")
            for path in sorted(p for p in base.rglob("*") if "__pycache__" not in p.parts):
                info = tar.gettarinfo(str(path), arcname=f"{model}/{path.relative_to(base)}")
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if path.is_file():
                    with path.open("rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def _check_member(member: tarfile.TarInfo, dest: Path) -> None:
    target = (dest / member.name).resolve()
    if member.name.startswith("/") or not target.is_relative_to(dest):
        raise ArchiveError(f"archive member {member.name!r} would be written outside {dest}")
    if member.issym() or member.islnk():
        base = target.parent if member.issym() else dest
        link = (base / member.linkname).resolve()
        if os.path.isabs(member.linkname) or not link.is_relative_to(dest):
            raise ArchiveError(f"archive member {member.name!r} links outside {dest} ({member.linkname!r})")
    elif not (member.isfile() or member.isdir()):
        raise ArchiveError(f"archive member {member.name!r} is not a file, directory or link")


def unpack(archive: Path, dest: Path) -> list[str]:
    """Extract a model tarball into dest after checking every member; returns the top-level names."""
    dest = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, dest)
            for member in members:
                member.mode = (member.mode | 0o644) & 0o755 if member.isfile() else 0o755
                tar.extract(member, dest, set_attrs=not member.issym())
    except tarfile.TarError as exc:
        raise ArchiveError(f"{archive} is not a readable model.tar.gz: {exc}") from None
    return sorted({Path(m.name).parts[0] for m in members if Path(m.name).parts})


def fetch(url: str, dest: Path) -> list[str]:
    """Put the model at url (s3://bucket/key, file:///path or a path; a .tar.gz or a directory) into dest."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        import boto3  # boto3's usual configuration: IAM role, AWS_ENDPOINT_URL, profiles
        from botocore.exceptions import BotoCoreError, ClientError

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model.tar.gz"
            try:
                boto3.client("s3").download_file(parsed.netloc, parsed.path.lstrip("/"), str(local))
            except (BotoCoreError, ClientError) as exc:
                raise ArchiveError(f"model URL {url!r}: {exc}") from None
            return unpack(local, dest)
    if parsed.scheme not in ("", "file"):
        raise ArchiveError(f"model URL {url!r}: use s3://bucket/key, file:///path or a path")
    source = Path(parsed.path if parsed.scheme else url)
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True)
        return sorted(p.name for p in source.iterdir())
    if not source.is_file():
        raise ArchiveError(f"model URL {url!r}: {source} does not exist")
    return unpack(source, dest)
