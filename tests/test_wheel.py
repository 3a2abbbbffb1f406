"""The wheel carries its data: built, installed into a fresh venv, it builds credit_risk and music_transformer."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile

import pytest

from bench.stack import ROOT


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = out.glob("sagestack-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "models/credit_risk/flow.json" in names and "models/music_transformer/weights/music_transformer.pt" in names
    assert any(n.startswith("compiler/tuning/") and n.endswith(".json") for n in names)
    env_dir = out / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    # The project from the wheel alone; its dependencies from the dev venv, after it on sys.path.
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    (env_dir / "lib").joinpath(site.split("/lib/", 1)[1], "zz_dev_deps.pth").write_text(
        sysconfig.get_path("purelib") + "\n"
    )
    return python, out


@pytest.mark.parametrize("model", ["credit_risk", "music_transformer"])
def test_installed_wheel_builds_the_model(wheel_venv, model, tmp_path):
    python, _ = wheel_venv
    where = subprocess.run([str(python), "-c", "import models; print(models.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert str(ROOT) not in where  # the wheel's copy, not the source tree
    result = subprocess.run([str(python), "-m", "server.cli", "build", model, "--out", str(tmp_path / model)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / model / "1").is_dir() and (tmp_path / model / "code" / "inference.py").is_file()
