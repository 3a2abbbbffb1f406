"""model.tar.gz unpacking refuses what could escape the target; fetch-model takes s3://, file:// and paths."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile

import pytest

from bench.stack import ROOT
from server.model_archive import ArchiveError, fetch, pack, unpack


def crafted(tmp_path, member: tarfile.TarInfo, data: bytes = b"x"):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("/etc/evil"),
        tarfile.TarInfo("../evil"),
        tarfile.TarInfo("model/../../evil"),
        link("model/escape", "/etc/passwd"),
        link("model/escape", "../../outside"),
        link("model/hard", "../outside", tarfile.LNKTYPE),
        link("model/dev", "", tarfile.CHRTYPE),
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "abs-symlink", "rel-symlink-out", "hardlink-out", "device"],
)
def test_unpack_refuses_escapes(tmp_path, member):
    dest = tmp_path / "dest"
    with pytest.raises(ArchiveError):
        unpack(crafted(tmp_path, member), dest)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "outside").exists()


def test_unpack_keeps_links_inside(tmp_path):
    path = tmp_path / "ok.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("m/1/data.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
        tar.addfile(link("m/1/alias.txt", "data.txt"))
    assert unpack(path, tmp_path / "dest") == ["m"]
    assert (tmp_path / "dest" / "m" / "1" / "alias.txt").read_text() == "hi"


def test_not_a_tarball_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(ArchiveError, match=r"not a readable model\.tar\.gz"):
        unpack(bad, tmp_path / "dest")
    with pytest.raises(ArchiveError, match="does not exist"):
        fetch(f"file://{tmp_path}/missing.tar.gz", tmp_path / "dest")
    with pytest.raises(ArchiveError, match="use s3://"):
        fetch("ftp://host/model.tar.gz", tmp_path / "dest")


def test_fetch_model_from_file_url_serves_the_same_tree(hpt_base, tmp_path):
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(pack(hpt_base.parent, ["half_plus_three"]))
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "fetch-model", f"file://{archive}", "--dest", str(tmp_path / "opt")],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    original = sorted(p.relative_to(hpt_base) for p in hpt_base.rglob("*"))
    assert sorted(p.relative_to(tmp_path / "opt" / "half_plus_three") for p in (tmp_path / "opt").rglob("*")
                  if p != tmp_path / "opt" / "half_plus_three") == original  # fmt: skip


def test_fetch_model_from_s3(aws, hpt_base, tmp_path):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="hpt/model.tar.gz", Body=pack(hpt_base.parent, ["half_plus_three"]))
    assert fetch("s3://models/hpt/model.tar.gz", tmp_path / "opt") == ["half_plus_three"]
    assert (tmp_path / "opt" / "half_plus_three" / "1" / "saved_model.pb").is_file()
    with pytest.raises(ArchiveError, match="s3://models/nope"):
        fetch("s3://models/nope/model.tar.gz", tmp_path / "other")
