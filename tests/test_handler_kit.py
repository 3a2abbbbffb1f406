"""The handler kit every model's code/lib gets, and the model-directory writer that ships it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from server import modeldir
from server.handler_kit import (
    BadRequest,
    NotAcceptable,
    UnsupportedType,
    csv_response,
    csv_rows,
    json_body,
    media_type,
    model_attributes,
    negotiate,
    parse_attributes,
)


def test_attributes_split_routing_from_model_parameters():
    raw = "tfs-model-name=music, temperature = 1.1,compiled=false,max_notes=50,junk"
    assert parse_attributes(raw) == {"tfs-model-name": "music", "temperature": "1.1", "compiled": "false",
                                     "max_notes": "50"}  # fmt: skip
    assert model_attributes(raw) == {"temperature": "1.1", "max_notes": "50"}
    assert parse_attributes(None) == {} == model_attributes("")


@pytest.mark.parametrize(
    ("accept", "want"),
    [
        (None, "audio/midi"),
        ("", "audio/midi"),
        ("*/*", "audio/midi"),
        ("audio/*", "audio/midi"),
        ("image/*", "image/png"),
        ("text/html, application/json;q=0.9", "application/json"),
        ("IMAGE/PNG; q=1", "image/png"),
    ],
)
def test_negotiate_picks_the_first_offered_type(accept, want):
    assert negotiate(accept, ("audio/midi", "application/json", "image/png")) == want


def test_negotiate_refuses_what_it_cannot_produce():
    with pytest.raises(NotAcceptable, match="use one of application/json, text/csv") as caught:
        negotiate("text/html", ("application/json", "text/csv"))
    assert caught.value.status_code == 406
    assert UnsupportedType("x").status_code == 415 and BadRequest("x").status_code == 400


def test_bodies():
    assert media_type("Application/JSONL; charset=utf-8") == "application/jsonlines"
    assert json_body(b'{"a": 1}') == {"a": 1}
    with pytest.raises(BadRequest, match="empty"):
        json_body(b"  ")
    with pytest.raises(BadRequest, match="malformed JSON"):
        json_body(b"{nope")
    assert csv_rows("a,b\n\n1,2\n") == [["a", "b"], ["1", "2"]]
    assert csv_response([[0.5, "low risk"], [1, 'say "hi", twice']]) == (
        '0.5,low risk\n1,"say ""hi"", twice"\n',
        "text/csv",
    )


def test_export_code_ships_the_family_package_and_a_dependency_free_kit(tmp_path):
    family = tmp_path / "src"
    family.mkdir()
    (family / "inference.py").write_text("from handler_kit import BadRequest\nfrom fam.shapes import AREA\n")
    (family / "shapes.py").write_text("AREA = 42\n")
    base = tmp_path / "model" / "fam"
    version = modeldir.fresh_version(base, 3)
    (version / "stale").write_text("from an earlier build")
    version = modeldir.fresh_version(base, 3)
    assert list(version.iterdir()) == []
    modeldir.write_metadata(version, {"runtime": "torchscript", "artifact": "model.tar.gz"})
    assert modeldir.version_kind(version) == "torchscript"
    with pytest.raises(modeldir.ModelDirError, match="needs 'artifact'"):
        modeldir.write_metadata(version, {"runtime": "torchscript"})
    code = modeldir.export_code(base, "fam", family / "inference.py", [family / "shapes.py"])
    assert (code / "lib" / "handler_kit.py").read_text() == Path(modeldir.HANDLER_KIT).read_text()
    # Standard library only (-S: no site-packages), and the family's modules under its own package name.
    probe = (
        "import handler_kit, fam.shapes, json; print(json.dumps([handler_kit.BadRequest.status_code, fam.shapes.AREA]))"
    )
    result = subprocess.run([sys.executable, "-S", "-c", probe], cwd=code / "lib", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [400, 42]
    (code / "config.json").write_text("{}")
    modeldir.export_code(base, "fam", family / "inference.py", keep=True)
    assert (code / "config.json").exists() and not (code / "lib" / "fam" / "shapes.py").exists()
